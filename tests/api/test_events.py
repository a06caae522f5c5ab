"""The event log's API (API.md "Event log"), black box: ingest and reading
back, idempotency by id, the seed's event anatomy, every rule of an event
with its error, batches, queries by time, type and tag in both orders paged
through continuation tokens (and refused tokens), exact paging while a
writer ingests, tailing with start = the previous end, retention, auth,
events and tokens that outlive a restart, and the deployment's bucket width
and shards."""

import json
import os
import re
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from sluice_client import BINARY, assert_error, assert_status, await_until, describe

TIME6 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
WEEK = 604800


def us(t):
    d = datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def uid(prefix="e"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


ORDER = {
    "id": "order-1042-created",
    "type": "order.created",
    "source": "shop/checkout-3",
    "subject": "order/1042",
    "time": "2026-12-04T10:00:00.5+01:00",
    "datacontenttype": "application/json",
    "specversion": "1.0",
    "tags": ["customer-77", "eu"],
    "metadata": {"traceId": "4bf92f35"},
    "data": {"total": 99.5, "items": 3},
}


def test_put_and_get_an_event(client):
    ev = dict(ORDER, id=uid("order"))
    r = assert_status(client.put_event(ev), 201)
    rc = r.json()
    assert rc["id"] == ev["id"]
    assert TIME6.match(rc["recordedAt"]) and TIME6.match(rc["expiresAt"]), describe(r)
    assert us(rc["expiresAt"]) - us(rc["recordedAt"]) == WEEK * 1_000_000
    assert abs(us(rc["recordedAt"]) / 1e6 - time.time()) < 60
    got = assert_status(client.get_event(ev["id"]), 200).json()
    want = {k: v for k, v in ev.items() if k != "specversion"}
    want.update(recordedAt=rc["recordedAt"], expiresAt=rc["expiresAt"])
    assert got == want, describe(r)


def test_absent_fields_read_back_as_empty_and_ids_are_made(client):
    rc = assert_status(client.put_event({"type": "ping"}), 201).json()
    assert re.match(r"^[A-Za-z0-9_.:-]{1,128}$", rc["id"]), rc
    got = assert_status(client.get_event(rc["id"]), 200).json()
    assert got == {"id": rc["id"], "type": "ping", "tags": [], "metadata": {}, "data": None,
                   "recordedAt": rc["recordedAt"], "expiresAt": rc["expiresAt"]}
    other = assert_status(client.put_event({"type": "ping"}), 201).json()
    assert other["id"] != rc["id"]


def test_same_id_same_content_matches_other_content_conflicts(client):
    eid = uid()
    ev = {"id": eid, "type": "t", "tags": ["a", "b"], "data": {"x": 1, "y": [1.5, "s"]}}
    first = assert_status(client.put_event(ev), 201).json()
    # The same JSON values: keys in another order, a number spelled otherwise.
    same = {"data": {"y": [1.5, "s"], "x": 1.0}, "tags": ["a", "b"], "type": "t", "id": eid}
    again = assert_status(client.put_event(same), 200).json()
    assert again == first
    for change in ({"data": {"x": 2, "y": [1.5, "s"]}}, {"tags": ["b", "a"]}, {"source": "elsewhere"},
                   {"type": "t2"}, {"metadata": {"k": "v"}}):
        err = assert_error(client.put_event(dict(ev, **change)), 409)
        assert err["code"] == "EventIdConflict"
    got = assert_status(client.get_event(eid), 200).json()
    assert got["data"] == {"x": 1, "y": [1.5, "s"]} and got["recordedAt"] == first["recordedAt"]
    # Nothing was stored twice: one event of that id in the log.
    client.await_readable(first["recordedAt"])
    events, _, _ = client.query_all([("type", "t"), ("start", first["recordedAt"])])
    assert [e["id"] for e in events].count(eid) == 1


def test_the_seeds_event_anatomy_is_accepted(client):
    eid = uid()
    r = assert_status(client.put_event({"id": eid, "type": "legacy", "payload": {"n": 1},
                                        "metadata": {"tags": ["x", "y"], "origin": "seed"}}), 201)
    got = assert_status(client.get_event(eid), 200).json()
    assert got["data"] == {"n": 1} and got["tags"] == ["x", "y"] and got["metadata"] == {"origin": "seed"}, describe(r)
    for both in ({"type": "t", "data": 1, "payload": 1}, {"type": "t", "tags": ["a"], "metadata": {"tags": ["a"]}}):
        assert_error(client.put_event(both), 400)


BAD = [
    ({"type": ""}, "type"),
    ({"type": "a b"}, "type"),
    ({"type": "x" * 129}, "type"),
    ({}, "type"),
    ({"type": "t", "id": "no spaces"}, "id"),
    ({"type": "t", "id": 5}, "id"),
    ({"type": "t", "source": ""}, "source"),
    ({"type": "t", "source": "x" * 257}, "source"),
    ({"type": "t", "subject": "two\nlines"}, "subject"),
    ({"type": "t", "time": "yesterday"}, "time"),
    ({"type": "t", "datacontenttype": "x" * 129}, "datacontenttype"),
    ({"type": "t", "specversion": "0.3"}, "specversion"),
    ({"type": "t", "tags": "eu"}, "tags"),
    ({"type": "t", "tags": ["a b"]}, "tags"),
    ({"type": "t", "tags": ["a\u0000b"]}, "tags"),
    ({"type": "t\u0000x"}, "type"),
    ({"type": "t", "tags": ["a", "a"]}, "tags"),
    ({"type": "t", "tags": [f"t{i}" for i in range(11)]}, "tags"),
    ({"type": "t", "metadata": []}, "metadata"),
    ({"type": "t", "metadata": {"k": 1}}, "'k'"),
    ({"type": "t", "metadata": {"bad key": "v"}}, "'bad key'"),
    ({"type": "t", "metadata": {"k": "v" * 1025}}, "'k'"),
    ({"type": "t", "metadata": {f"k{i}": "v" for i in range(33)}}, "metadata"),
    ({"type": "t", "tag": ["eu"]}, "'tag'"),
    ({"type": "t", "recordedAt": "2026-12-04T09:00:00Z"}, "recordedAt"),
]


@pytest.mark.parametrize("event,field", BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_an_event_out_of_its_rules_is_400_naming_the_field(client, event, field):
    eid = event.get("id") if isinstance(event.get("id"), str) and " " not in event.get("id", "") else None
    err = assert_error(client.put_event(event), 400)
    assert err["code"] == "InvalidParameter" and field.strip("'") in err["message"], err
    if eid:
        assert_error(client.get_event(eid), 404)


def test_malformed_bodies_and_oversized_data(client):
    r = client.request("POST", client.ebase() + "/events", data=b"{not json", headers={"Content-Type": "application/json"})
    assert assert_error(r, 400)["code"] == "MalformedJson"
    r = client.request("POST", client.ebase() + "/events", data=b"[1]", headers={"Content-Type": "application/json"})
    assert assert_error(r, 400)["code"] == "MalformedJson"
    eid = uid()
    big = {"id": eid, "type": "t", "data": "x" * 65535}  # 65,537 bytes with its quotes
    assert assert_error(client.put_event(big), 413)["code"] == "EventTooLarge"
    assert_error(client.get_event(eid), 404)
    fits = {"id": eid, "type": "t", "data": "x" * 65534}
    assert_status(client.put_event(fits), 201)



def test_data_nested_to_the_parsers_limit_is_kept(client):
    """Data nested as deep as the JSON parser allows (2,048 levels, with the
    event around it) is stored and read back whole: the handlers run on
    the store pool's fibers, whose stacks must hold the parser's and the
    writer's recursion (a 512 KiB stack did not, and the server died); one
    level deeper is a 400."""
    def nested(depth):
        return '{"a":' * depth + "1" + "}" * depth

    eid = uid()
    body = '{"id": "%s", "type": "t", "data": %s}' % (eid, nested(2046))
    r = client.request("POST", client.ebase() + "/events", data=body.encode(),
                       headers={"Content-Type": "application/json"})
    assert_status(r, 201)
    got = assert_status(client.get_event(eid), 200)
    assert nested(2046) in got.text.replace(" ", "")
    deeper = '{"type": "t", "data": %s}' % nested(2048)
    r = client.request("POST", client.ebase() + "/events", data=deeper.encode(),
                       headers={"Content-Type": "application/json"})
    assert assert_error(r, 400)["code"] == "MalformedJson"
    assert_status(client.health(), 200)

def test_batches(client):
    ids = [uid("b") for _ in range(3)]
    evs = [{"id": i, "type": "batch.t", "tags": ["batch"]} for i in ids]
    res = assert_status(client.put_events(evs), 200).json()["results"]
    assert [x["status"] for x in res] == [201, 201, 201] and [x["id"] for x in res] == ids
    evs[1]["data"] = 7
    res = assert_status(client.put_events(evs + [{"type": "batch.t"}]), 200).json()["results"]
    assert [x["status"] for x in res] == [200, 409, 200, 201]
    # Refused whole: a duplicate id, an invalid entry (named by its index),
    # too many, too few, another field.
    fresh = uid("b")
    assert assert_error(client.put_events([{"id": fresh, "type": "t"}, {"id": fresh, "type": "t"}]),
                        400)["code"] == "DuplicateId"
    err = assert_error(client.put_events([{"id": fresh, "type": "t"}, {"type": "bad type"}]), 400)
    assert "events[1]" in err["message"], err
    assert_error(client.put_events([{"type": "t"}] * 101), 400)
    assert_error(client.put_events([]), 400)
    r = client.request("POST", client.ebase() + "/events/batch", json={"events": [{"type": "t"}], "more": 1})
    assert_error(r, 400)
    assert_error(client.get_event(fresh), 404)


def put_series(client, n, prefix):
    """n events of types a/b/c and tags among x/y/z, one at a time; returns
    them with their receipts, in the order they were recorded."""
    out = []
    for i in range(n):
        ev = {"id": f"{prefix}-{i:03d}", "type": f"{prefix}.{'abc'[i % 3]}",
              "tags": [t for k, t in enumerate(("x", "y", "z")) if (i >> k) & 1]}
        rc = assert_status(client.put_event(ev), 201).json()
        out.append(dict(ev, recordedAt=rc["recordedAt"]))
    client.await_readable(out[-1]["recordedAt"])
    return out


def test_queries_by_time_type_and_tag_in_both_orders(client):
    p = uid("q")
    evs = put_series(client, 40, p)
    start = evs[0]["recordedAt"]
    everything, _, end = client.query_all({"start": start})
    assert [e["id"] for e in everything][-40:] == [e["id"] for e in evs]
    assert us(end) >= us(evs[-1]["recordedAt"])

    def check(params, match):
        want = [e["id"] for e in evs if match(e)]
        for order in ("asc", "desc"):
            for limit in (1, 7, 100):
                got, pages, _ = client.query_all(params + [("start", start), ("order", order)], limit=limit)
                ids = [e["id"] for e in got]
                assert ids == (want if order == "asc" else want[::-1]), (params, order, limit)
                assert all(len(pg["events"]) <= limit for pg in pages)
                pos = [(e["recordedAt"], e["id"]) for e in got]
                assert pos == sorted(pos, reverse=order == "desc") and len(set(pos)) == len(pos)

    check([("type", f"{p}.a")], lambda e: e["type"] == f"{p}.a")
    check([("type", f"{p}.a"), ("type", f"{p}.c")], lambda e: e["type"] in (f"{p}.a", f"{p}.c"))
    check([("tag", "x")], lambda e: "x" in e["tags"])
    check([("tag", "x"), ("tag", "z")], lambda e: "x" in e["tags"] or "z" in e["tags"])
    check([("tag", "y"), ("type", f"{p}.b")], lambda e: "y" in e["tags"] and e["type"] == f"{p}.b")
    # A time range: [start, end) on recordedAt.
    lo, hi = evs[10]["recordedAt"], evs[30]["recordedAt"]
    got, _, end = client.query_all({"start": lo, "end": hi, "type": f"{p}.b"})
    assert [e["id"] for e in got] == [e["id"] for e in evs[10:30] if e["type"] == f"{p}.b"]
    assert end == hi
    # Milliseconds since the epoch are a time too.
    ms = us(lo) // 1000
    got, _, _ = client.query_all({"start": str(ms), "type": f"{p}.a"})
    assert got[0]["id"] in [e["id"] for e in evs[9:13]]


def test_tailing_with_start_at_the_previous_end(client):
    p = uid("tail")
    first = put_series(client, 5, p)
    seen, _, end = client.query_all({"start": first[0]["recordedAt"], "tag": "x"})
    more = put_series(client, 6, p + "n")
    later, _, _ = client.query_all({"start": end, "tag": "x"})
    assert [e["id"] for e in seen] == [e["id"] for e in first if "x" in e["tags"]]
    assert [e["id"] for e in later] == [e["id"] for e in more if "x" in e["tags"]]


def test_continuation_tokens_are_checked(client, server):
    p = uid("tok")
    put_series(client, 6, p)
    r = assert_status(client.query_events([("type", f"{p}.a"), ("type", f"{p}.b"), ("limit", "1")]), 200)
    token = r.json()["continuation"]
    assert token
    # Repeating the same values (in any order) is fine; limit may change.
    ok = client.query_events([("continuation", token), ("type", f"{p}.b"), ("type", f"{p}.a"), ("limit", "5")])
    assert_status(ok, 200)
    for extra in ([("type", f"{p}.c")], [("order", "desc")], [("tag", "x")], [("start", "1")],
                  [("end", "2020-01-01T00:00:00Z")]):
        err = assert_error(client.query_events([("continuation", token)] + extra), 400)
        assert err["code"] == "InvalidContinuation", (extra, err)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:-1], "v1" + token[2:][::-1], "x" * 4097, "garbage"):
        err = assert_error(client.query_events({"continuation": bad}), 400)
        assert err["code"] == "InvalidContinuation", err
    # Another account's token is refused there.
    acct, key = server.admin().new_account("evtok")
    other = client.clone(account=acct, key=key)
    err = assert_error(other.query_events({"continuation": token}), 400)
    assert err["code"] == "InvalidContinuation"


BAD_PARAMS = [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"order": "up"}, {"start": "yesterday"},
    {"start": "1969-12-31T23:59:59Z"}, {"end": "2026-13-01T00:00:00Z"},
    {"start": "2026-12-04T10:00:00Z", "end": "2026-12-04T09:00:00Z"}, {"type": "bad type"}, {"tag": "a/b"},
    {"color": "red"}, [("start", "0"), ("start", "1")], [("type", f"t{i}") for i in range(11)],
]


@pytest.mark.parametrize("params", BAD_PARAMS, ids=[str(i) for i in range(len(BAD_PARAMS))])
def test_bad_query_parameters_are_400(client, params):
    err = assert_error(client.query_events(params), 400)
    assert err["code"] == "InvalidParameter", err


def test_equal_start_and_end_is_an_empty_page(client):
    page = assert_status(client.query_events({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
                         200).json()
    assert page == {"events": [], "continuation": None, "end": "2026-01-01T00:00:00.000000Z"}


def test_retention(client, server):
    acct, key = server.admin().new_account("evret")
    c = client.clone(account=acct, key=key)
    assert assert_status(c.eventlog(), 200).json() == {"retentionSeconds": WEEK}
    for bad in (0, 31536001, "60", None):
        r = c.request("PUT", c.ebase() + "/eventlog", json={"retentionSeconds": bad})
        assert_error(r, 400)
    assert assert_status(c.eventlog(60), 200).json() == {"retentionSeconds": 60}
    assert assert_status(c.eventlog(), 200).json() == {"retentionSeconds": 60}
    rc = assert_status(c.put_event({"type": "t"}), 201).json()
    assert us(rc["expiresAt"]) - us(rc["recordedAt"]) == 60_000_000
    assert us(assert_status(c.get_event(rc["id"]), 200).json()["expiresAt"]) == us(rc["expiresAt"])


def test_auth_and_unknown_routes(client, server):
    ev = client.ebase() + "/events"
    r = client.s.post(client.base_url + ev, json={"type": "t"})
    assert_error(r, 401)
    r = client.s.get(client.base_url + ev, headers={"Authorization": "Key " + "A" * 86})
    assert_error(r, 401)
    assert_error(client.query_events(account="no-such-account"), 401)
    # A signed URL for one queue grants nothing in the event log.
    admin = server.admin()
    q = client.new_queue("evq")
    query = assert_status(admin.signed_url("dev", levels="rp", queueName=q), 200).json()["queryString"]
    r = client.s.get(client.base_url + ev + "?" + query)
    assert_error(r, 403)
    assert assert_error(client.get_event(uid()), 404)["code"] == "EventNotFound"
    r = client.request("DELETE", ev + "/whatever")
    assert_error(r, 405)


def test_events_and_tokens_outlive_a_restart(server_factory):
    srv = server_factory("evrestart")
    c = srv.client()
    p = uid("rs")
    evs = put_series(c, 5, p)
    r = assert_status(c.query_events([("start", evs[0]["recordedAt"]), ("limit", "2")]), 200).json()
    c.close()
    srv.stop()
    srv.start()
    c = srv.client()
    assert assert_status(c.get_event(evs[0]["id"]), 200).json()["recordedAt"] == evs[0]["recordedAt"]
    rest = assert_status(c.query_events({"continuation": r["continuation"]}), 200).json()
    assert [e["id"] for e in r["events"] + rest["events"]][:5] == [e["id"] for e in evs]
    c.close()


def test_bucket_width_and_shards_are_the_deployments(server_factory, tmp_path):
    """--event-bucket-seconds and --event-shards: the first node records
    them, a node configured otherwise uses the recorded ones and says so,
    and a width that does not divide a day is refused at start."""
    srv = server_factory("evcfg", env={"SLUICE_EVENT_BUCKET_SECONDS": "10", "SLUICE_EVENT_SHARDS": "2"})
    c = srv.client()
    first = put_series(c, 3, uid("cfg"))
    c.close()
    srv.stop()
    srv.extra_env = {}
    srv.start()
    assert any("buckets of 10 s in 2 shards, as the store says (not 60 s in 4)" in line for line in srv.lines), \
        srv.log_tail(20)
    c = srv.client()
    c.await_readable(first[-1]["recordedAt"])
    got = [e["id"] for e in c.query_all({"start": first[0]["recordedAt"]}, limit=2)[0]]
    assert got[:3] == [e["id"] for e in first]
    c.close()
    p = subprocess.run([BINARY, "dev", "--data", str(tmp_path / "bad"), "--port", "0", "--admin-port", "0",
                        "--event-bucket-seconds", "7"], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "CONTACT_POINTS"})
    assert p.returncode != 0 and "must divide a day" in p.stderr, (p.returncode, p.stderr[-500:])


def test_exact_paging_while_a_writer_ingests(client):
    """Every matching event of the range exactly once, in strict order, in
    both directions, while another client ingests into the same log; then
    querying on from the range's end picks up exactly the rest."""
    kind = uid("conc").replace("-", ".")
    answered, stop, lock = {}, threading.Event(), threading.Lock()

    def writer():
        w = client.clone()
        i = 0
        while not stop.is_set():
            ev = {"id": f"{kind}-{i}", "type": kind, "tags": ["odd" if i % 2 else "even"]}
            r = w.put_event(ev)
            if r.status_code in (200, 201):
                with lock:
                    answered[ev["id"]] = r.json()["recordedAt"]
                i += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        await_until(lambda: len(answered) >= 60, timeout=30, desc="the writer to ingest 60 events")
        with lock:
            sixtieth = sorted(answered.values())[59]
        client.await_readable(sixtieth)  # on Cassandra reads stop the settle time behind now
        for order, params in (("asc", [("type", kind)]), ("desc", [("type", kind), ("order", "desc")]),
                              ("asc", [("type", kind), ("tag", "odd")])):
            evs, pages, end = client.query_all(params, limit=7)
            pos = [(e["recordedAt"], e["id"]) for e in evs]
            want = sorted(set(pos), reverse=order == "desc")
            assert pos == want, f"{params}: pages repeat or reorder events"
            assert all(at < end for at, _ in pos), f"{params}: an event at or past the frozen end {end}"
            with lock:
                due = {i for i, at in answered.items() if at < end and (("tag", "odd") not in params
                                                                        or int(i.rsplit("-", 1)[1]) % 2)}
            got = {i for _, i in pos}
            assert due <= got, f"{params}: answered events missing: {sorted(due - got)[:3]}"
            assert len(pages) > 3, "the query did not page"
    finally:
        stop.set()
        t.join()
    # Tailing: from the previous end, exactly what came after it.
    evs, _, end = client.query_all([("type", kind)], limit=50)
    first_end = evs[len(evs) // 2]["recordedAt"]
    head = [e["id"] for e in evs if e["recordedAt"] < first_end]
    client.await_readable(max(answered.values()))
    tail, _, _ = client.query_all([("type", kind), ("start", first_end)], limit=13)
    assert head + [e["id"] for e in tail] == sorted(answered, key=lambda i: (answered[i], i))
