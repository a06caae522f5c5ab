"""Queues: create, list, get, delete, names and options (API.md "Queue API")."""

import pytest

from sluice_client import (
    DEFAULT_QUEUE_OPTS,
    assert_error,
    assert_status,
    describe,
    unique_name,
)


def test_create_returns_201_with_definition_and_defaults(client):
    name = unique_name("create")
    r = assert_status(client.create_queue(name), 201)
    d = r.json()
    assert isinstance(d, dict), describe(r)
    assert d.get("queueName") == name, describe(r)
    for k, v in DEFAULT_QUEUE_OPTS.items():
        assert k in d, f"QueueDefinition lacks {k}: {describe(r)}"
        assert d[k] == v, f"default of {k} should be {v!r}: {describe(r)}"


def test_create_echoes_given_options(client):
    dlq = client.new_queue("echo-dlq")
    name = unique_name("echo")
    opts = {
        "bucketSize": 7,
        "maxDeliveryCount": 3,
        "dlqName": dlq,
        "repairWorkerPollSeconds": 2,
        "repairWorkerBucketFinalizeTimeSeconds": 4,
        "deleteBucketsAfterFinalize": False,
        "retentionSeconds": 3600,
        "strictFifo": True,
        "visibilityTimeoutSeconds": 90,
        "delaySeconds": 4,
        "receiveWaitSeconds": 20,
        "maximumMessageBytes": 4096,
    }
    r = assert_status(client.create_queue(name, **opts), 201)
    d = r.json()
    assert d.get("queueName") == name
    for k, v in opts.items():
        assert d.get(k) == v, f"{k} not echoed as {v!r}: {describe(r)}"
    # GET returns the same definition.
    g = assert_status(client.get_queue(name), 200).json()
    for k, v in opts.items():
        assert g.get(k) == v, f"GET: {k} should be {v!r}, got {g.get(k)!r}"


def test_create_again_is_200_and_error_if_exists_is_409(client):
    name = unique_name("again")
    assert_status(client.create_queue(name), 201)
    r = assert_status(client.create_queue(name), 200)
    assert r.json().get("queueName") == name, describe(r)
    assert_status(client.create_queue(name, error_if_exists=False), 200)
    assert_error(client.create_queue(name, error_if_exists=True), 409)
    # A fresh name with errorIfExists=true is simply created.
    assert_status(client.create_queue(unique_name("fresh"), error_if_exists=True), 201)


def test_create_again_with_other_options_keeps_the_existing_queue(client):
    name = unique_name("keep")
    assert_status(client.create_queue(name, bucketSize=7), 201)
    r = assert_status(client.create_queue(name, bucketSize=9), 200)
    assert r.json().get("bucketSize") == 7, f"create of an existing queue changed it: {describe(r)}"
    assert assert_status(client.get_queue(name), 200).json()["bucketSize"] == 7


def test_list_shows_this_accounts_queues(client):
    names = {client.new_queue("list") for _ in range(3)}
    r = assert_status(client.list_queues(), 200)
    body = r.json()
    assert isinstance(body, list), describe(r)
    listed = [d.get("queueName") for d in body]
    assert names <= set(listed), f"missing {names - set(listed)} in {listed}"
    assert len(listed) == len(set(listed)), f"duplicates in list: {listed}"
    for d in body:
        assert isinstance(d, dict) and "bucketSize" in d, f"not a QueueDefinition: {d!r}"


def test_list_does_not_show_deleted_queues(client):
    name = client.new_queue("listdel")
    assert_status(client.delete_queue(name), 200)
    listed = [d.get("queueName") for d in assert_status(client.list_queues(), 200).json()]
    assert name not in listed


def test_get_queue(client):
    name = client.new_queue("get", bucketSize=11)
    r = assert_status(client.get_queue(name), 200)
    d = r.json()
    assert d.get("queueName") == name and d.get("bucketSize") == 11, describe(r)


def test_get_unknown_queue_is_404_json(client):
    err = assert_error(client.get_queue(unique_name("nosuch")), 404)
    assert err["code"] == "QueueNotFound", err


@pytest.mark.parametrize("suffix,method", [
    ("/statistics", "GET"),
    ("/messages/next", "GET"),
    ("/messages", "POST"),
    ("", "DELETE"),
    ("/purge", "POST"),
    ("/messages/peek", "GET"),
])
def test_routes_on_unknown_queue_are_404(client, suffix, method):
    q = unique_name("nosuch")
    kw = {"data": b"x"} if method == "POST" else {}
    assert_error(client.request(method, client.qpath(q, suffix), **kw), 404)


def test_delete_then_404_and_recreate_is_empty(client):
    name = client.new_queue("del")
    client.put_ok(name, "before delete")
    assert_status(client.delete_queue(name), 200)
    assert_error(client.get_queue(name), 404)
    assert_error(client.delete_queue(name), 404)
    assert_error(client.get_next(name), 404)
    # Recreated under the same name: a new, empty queue.
    assert_status(client.create_queue(name, repairWorkerPollSeconds=1, repairWorkerBucketFinalizeTimeSeconds=1), 201)
    r = client.get_next(name)
    assert r.status_code == 204, f"recreated queue delivered an old message: {describe(r)}"
    client.await_stats(name, size=0, visible=0, inFlight=0, delayed=0)
    mid = client.put_ok(name, "after recreate")
    m = assert_status(client.get_next(name), 200).json()
    assert m["messageId"] == mid and m["message"] == "after recreate"


@pytest.mark.parametrize("bad", [
    "a" * 81,
    "",
    "has space",
    "slash/name",
    "star*",
    "colon:x",
    "umlaut-\u00fc",
    "emoji-\U0001f600",
    "semi;colon",
    "q?x",
    "tab\tname",
])
def test_bad_queue_names_are_400(client, bad):
    err = assert_error(client.create_queue(bad), 400)
    assert err["code"], err


def test_name_of_80_chars_is_fine(client):
    name = unique_name("x")
    name = name + "a" * (80 - len(name))
    assert len(name) == 80
    r = assert_status(client.create_queue(name), 201)
    assert r.json()["queueName"] == name
    assert_status(client.get_queue(name), 200)


def test_all_valid_name_chars(client):
    name = "Az09_.-" + unique_name("chars")
    assert_status(client.create_queue(name), 201)
    assert_status(client.get_queue(name), 200)


@pytest.mark.parametrize("field,value", [
    ("bucketSize", 0),
    ("bucketSize", -1),
    ("bucketSize", 10 ** 12),
    ("bucketSize", "20"),
    ("bucketSize", 2.5),
    ("bucketSize", None),
    ("maxDeliveryCount", 0),
    ("maxDeliveryCount", -3),
    ("maxDeliveryCount", "5"),
    ("maxDeliveryCount", 10 ** 20),
    ("repairWorkerPollSeconds", 0),
    ("repairWorkerPollSeconds", -1),
    ("repairWorkerPollSeconds", "1"),
    ("repairWorkerBucketFinalizeTimeSeconds", 0),
    ("repairWorkerBucketFinalizeTimeSeconds", -1),
    ("repairWorkerBucketFinalizeTimeSeconds", [1]),
    ("retentionSeconds", 0),
    ("retentionSeconds", -1),
    ("retentionSeconds", 1209601),
    ("retentionSeconds", 10 ** 30),
    ("retentionSeconds", "3600"),
    ("deleteBucketsAfterFinalize", "yes"),
    ("deleteBucketsAfterFinalize", {}),
    ("strictFifo", "true"),
    ("strictFifo", []),
    ("visibilityTimeoutSeconds", -1),
    ("visibilityTimeoutSeconds", 43201),
    ("delaySeconds", 901),
    ("receiveWaitSeconds", 21),
    ("maximumMessageBytes", 0),
    ("maximumMessageBytes", 1023),
    ("maximumMessageBytes", 1048577),
    ("maximumMessageBytes", "4096"),
    ("dlqName", 5),
    ("dlqName", "bad name"),
    ("dlqName", "a" * 81),
    ("queueName", 5),
    ("queueName", None),
    ("queueName", ["x"]),
])
def test_option_out_of_range_or_wrong_type_is_400(client, field, value):
    body = {"queueName": unique_name("opt")}
    body[field] = value
    r = client.request("POST", client.qbase(), json=body)
    assert_error(r, 400)
    if field != "queueName":
        assert_error(client.get_queue(body["queueName"]), 404)


@pytest.mark.parametrize("raw", [
    b'{"queueName": "x"',
    b"not json",
    b"",
    b'["queueName", "x"]',
    b'"just a string"',
    b"42",
    b"null",
    b"{}",
    b'{"queueName": "x",}',
    b"\xff\xfe\x00garbage",
])
def test_malformed_create_body_is_400(client, raw):
    r = client.request("POST", client.qbase(), data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_dlq_naming_missing_queue_is_400(client):
    name = unique_name("needsdlq")
    assert_error(client.create_queue(name, dlqName=unique_name("missingdlq")), 400)
    assert_error(client.get_queue(name), 404)


def test_dlq_naming_existing_queue_is_fine(client):
    dlq = client.new_queue("dlq")
    name = unique_name("withdlq")
    r = assert_status(client.create_queue(name, dlqName=dlq, maxDeliveryCount=2), 201)
    assert r.json()["dlqName"] == dlq


def test_unknown_account_is_401(client):
    """An account that does not exist has no keys, so any credential for it
    is refused like a wrong key (401), not 404: callers without a key of an
    account cannot learn whether it exists. Even the dev key is refused."""
    other = client.clone(account="no-such-account-" + unique_name("a"), key=client.key)
    assert_error(other.list_queues(), 401)
    assert_error(other.create_queue("q1"), 401)
    assert_error(other.get_queue("q1"), 401)
    assert_error(other.put("q1", "x"), 401)
    assert_error(other.get_next("q1"), 401)


def test_accounts_are_isolated(server, client):
    """Two accounts with a queue of the same name: each lists, sees and
    receives only its own."""
    admin = server.admin()
    try:
        other_name, other_key = admin.new_account("iso")
    finally:
        admin.close()
    other = server.client(account=other_name, key=other_key)
    try:
        shared = unique_name("shared")
        mine_only = client.new_queue("mine")
        assert_status(client.create_queue(shared), 201)
        assert_status(other.create_queue(shared), 201)  # not "already exists"
        mid = client.put_ok(shared, "for dev")
        listed = [d["queueName"] for d in assert_status(other.list_queues(), 200).json()]
        assert listed == [shared], f"the other account lists {listed}"
        assert mine_only in [d["queueName"] for d in assert_status(client.list_queues(), 200).json()]
        assert_error(other.get_queue(mine_only), 404)
        r = other.get_next(shared)
        assert r.status_code == 204, f"the other account received dev's message: {describe(r)}"
        m = assert_status(client.get_next(shared, invisibility=60), 200).json()
        assert m["messageId"] == mid
        # dev's receipt is no good in the other account's queue of that name.
        assert_error(other.ack(shared, m["popReceipt"]), 400, 404, 409)
        assert_status(client.ack(shared, m["popReceipt"]), 204)
        assert_status(other.delete_queue(shared), 200)
        assert_status(client.get_queue(shared), 200)
    finally:
        other.close()
