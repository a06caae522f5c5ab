"""Subscriptions (API.md "Subscriptions"), black box, on both stores: the
routes with every rule and error, idempotent create, the limit of 100;
delivery into the queue (the StoredEvent as the body, the ce-* attributes)
in position order through filters by type and tag, from startFrom now,
earliest and a time; a queue deleted and made again loses nothing; a
deleted subscription delivers no more; isolation between accounts; a
deleted account's log and subscriptions; and, across a SIGKILL under
ingest, every event whose ingest was answered is delivered, and a
continuation token issued before the kill finishes its paging exactly.

Absence is shown without waiting for time to pass: delivery is in position
order, so once a marker event ingested after the events in question has
arrived, anything that was to come before it has come."""

import json
import threading
import time
import uuid

import pytest

from sluice_client import assert_error, assert_status, await_until, describe, unique_name

NAME_RULE = "[A-Za-z0-9_.-]{1,80}"


def uid(prefix="e"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def put(c, type_, tags=(), data=None, **extra):
    ev = {"id": uid(type_.replace(".", "-")), "type": type_, "tags": list(tags), "data": data, **extra}
    rc = assert_status(c.put_event(ev), 201).json()
    return dict(ev, recordedAt=rc["recordedAt"])


def sub_name():
    return unique_name("sub")


def ids_in_order(msgs):
    """The ce-ids in order of first arrival."""
    seen, out = set(), []
    for m in msgs:
        i = m["attributes"]["ce-id"]
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


@pytest.fixture()
def acct(server, client):
    """A fresh account of its own, so that one test's subscriptions (and
    the limit of 100) never meet another's."""
    name, key = server.admin().new_account("subs")
    c = client.clone(account=name, key=key)
    yield c
    for s in c.list_subs().json().get("subscriptions", []):
        c.delete_sub(s["subscriptionName"])
    c.close()


def test_create_get_list_delete(acct):
    c = acct
    q = c.new_queue("sq")
    n = sub_name()
    r = assert_status(c.create_sub(n, q, {"types": ["b.x", "a.x", "a.x"], "tags": ["eu"]}), 201)
    s = r.json()
    assert s["subscriptionName"] == n and s["queueName"] == q, describe(r)
    assert s["filter"] == {"types": ["a.x", "b.x"], "tags": ["eu"]}, describe(r)
    assert s["state"] == "active" and s["delivered"] == 0, describe(r)
    assert s["startFrom"] == s["createdAt"] == s["position"], describe(r)
    # The same definition again (values as sets, startFrom as given): 200, the same one.
    again = assert_status(c.create_sub(n, q, {"tags": ["eu"], "types": ["a.x", "b.x"]}, start="now"), 200).json()
    assert again["createdAt"] == s["createdAt"]
    # Another definition under the name: 409.
    for other in ({"types": ["a.x"], "tags": ["eu"]}, {"types": ["a.x", "b.x"]}):
        assert assert_error(c.create_sub(n, q, other), 409)["code"] == "SubscriptionExists"
    assert assert_error(c.create_sub(n, q, {"types": ["a.x", "b.x"], "tags": ["eu"]}, start="earliest"),
                        409)["code"] == "SubscriptionExists"
    q2 = c.new_queue("sq")
    assert assert_error(c.create_sub(n, q2, {"types": ["a.x", "b.x"], "tags": ["eu"]}), 409)["code"] == \
        "SubscriptionExists"
    got = assert_status(c.get_sub(n), 200).json()
    assert {k: got[k] for k in ("subscriptionName", "queueName", "filter", "startFrom", "createdAt")} == \
        {k: s[k] for k in ("subscriptionName", "queueName", "filter", "startFrom", "createdAt")}
    n2 = sub_name()
    assert_status(c.create_sub(n2, q2), 201)
    listed = assert_status(c.list_subs(), 200).json()["subscriptions"]
    assert sorted(x["subscriptionName"] for x in listed) == sorted([n, n2])
    assert [x for x in listed if x["subscriptionName"] == n2][0]["filter"] == {"types": [], "tags": []}
    assert assert_status(c.delete_sub(n), 200).json() == {}
    assert assert_error(c.get_sub(n), 404)["code"] == "SubscriptionNotFound"
    assert assert_error(c.delete_sub(n), 404)["code"] == "SubscriptionNotFound"
    assert [x["subscriptionName"] for x in c.list_subs().json()["subscriptions"]] == [n2]
    # The name is free again, for any definition.
    assert assert_status(c.create_sub(n, q2, start="earliest"), 201).json()["queueName"] == q2


@pytest.mark.parametrize("body, field", [
    ({"queueName": "q"}, "subscriptionName"),
    ({"subscriptionName": "s"}, "queueName"),
    ({"subscriptionName": "a/b", "queueName": "q"}, "subscriptionName"),
    ({"subscriptionName": "x" * 81, "queueName": "q"}, "subscriptionName"),
    ({"subscriptionName": "s", "queueName": ""}, "queueName"),
    ({"subscriptionName": 7, "queueName": "q"}, "subscriptionName"),
    ({"subscriptionName": "s", "queueName": "q", "extra": 1}, "extra"),
    ({"subscriptionName": "s", "queueName": "q", "filter": {"type": ["a"]}}, "filter.type"),
    ({"subscriptionName": "s", "queueName": "q", "filter": ["a"]}, "filter"),
    ({"subscriptionName": "s", "queueName": "q", "filter": {"types": "a"}}, "filter.types"),
    ({"subscriptionName": "s", "queueName": "q", "filter": {"types": ["a b"]}}, "filter.types"),
    ({"subscriptionName": "s", "queueName": "q", "filter": {"tags": ["t"] * 11}}, "filter.tags"),
    ({"subscriptionName": "s", "queueName": "q", "filter": {"tags": ["a/b"]}}, "filter.tags"),
    ({"subscriptionName": "s", "queueName": "q", "startFrom": "yesterday"}, "startFrom"),
    ({"subscriptionName": "s", "queueName": "q", "startFrom": 5}, "startFrom"),
    ({"subscriptionName": "s", "queueName": "q", "startFrom": "2026-13-01T00:00:00Z"}, "startFrom"),
])
def test_a_create_out_of_its_rules_is_400_naming_the_field(acct, body, field):
    err = assert_error(acct.request("POST", acct.ebase() + "/subscriptions", json=body), 400)
    assert err["code"] == "InvalidParameter" and field in err["message"], err


def test_create_errors_and_methods(acct):
    c = acct
    path = c.ebase() + "/subscriptions"
    for raw in (b"", b"{", b"[]", b'"s"'):
        err = assert_error(c.request("POST", path, data=raw, headers={"Content-Type": "application/json"}), 400)
        assert err["code"] in ("MalformedJson", "InvalidParameter"), err
    assert assert_error(c.create_sub(sub_name(), "no-such-queue"), 404)["code"] == "QueueNotFound"
    assert c.list_subs().json()["subscriptions"] == []
    assert_error(c.request("PUT", path + "/x", json={}), 405)
    assert_error(c.request("DELETE", path), 405)
    assert_error(c.request("GET", path + "/x/y"), 404)


def test_an_account_has_at_most_100(acct):
    c = acct
    q = c.new_queue("sq")
    names = [f"s{i:03d}" for i in range(100)]
    for n in names:
        assert_status(c.create_sub(n, q, {"types": ["never.sent"]}), 201)
    assert assert_error(c.create_sub("one-more", q), 409)["code"] == "SubscriptionLimitExceeded"
    # An identical create of an existing one is still answered.
    assert_status(c.create_sub(names[0], q, {"types": ["never.sent"]}), 200)
    assert_status(c.delete_sub(names[0]), 200)
    assert_status(c.create_sub("one-more", q), 201)
    assert len(c.list_subs().json()["subscriptions"]) == 100


def test_delivery_through_filters_in_position_order(acct):
    c = acct
    # strictFifo: a queue hands out what was put in one bucket in put order
    # only then (DESIGN.md, guarantee 5), and the order is what is checked.
    qa, qt, qb = (c.new_queue(p, strictFifo=True) for p in ("sa", "st", "sb"))
    sa, st, sb = sub_name(), sub_name(), sub_name()
    assert_status(c.create_sub(sa, qa), 201)
    assert_status(c.create_sub(st, qt, {"types": ["order.created", "order.paid"]}), 201)
    assert_status(c.create_sub(sb, qb, {"types": ["order.created"], "tags": ["eu", "vip"]}), 201)
    evs = [
        put(c, "order.created", ["eu"], {"n": 1}, source="shop/1"),
        put(c, "order.created", ["us"], {"n": 2}),
        put(c, "order.paid", ["eu", "vip"], {"n": 3}),
        put(c, "order.created", ["vip", "eu"], {"n": 4}, source="shop/2"),
        put(c, "user.signup", ["eu"], [1, 2]),
        put(c, "order.created", [], "text"),
    ]
    ids = [e["id"] for e in evs]
    want = {
        qa: ids,
        qt: [e["id"] for e in evs if e["type"] in ("order.created", "order.paid")],
        qb: [e["id"] for e in evs if e["type"] == "order.created" and {"eu", "vip"} & set(e["tags"])],
    }
    marker = put(c, "order.created", ["eu"], {"marker": True})
    got = {}
    for q, w in want.items():
        got[q] = c.collect_events(q, w + [marker["id"]])
        order = ids_in_order(got[q])
        assert order == w + [marker["id"]], f"queue {q}: {order}, expected {w} and the marker, in order"
    # The message: the StoredEvent as GET /events/{id} answers it, and the ce-* attributes.
    for q, sub in ((qa, sa), (qb, sb)):
        for m in got[q]:
            ev_id = m["attributes"]["ce-id"]
            stored = assert_status(c.get_event(ev_id), 200).json()
            assert json.loads(m["message"]) == stored
            want_attrs = {"ce-id": ev_id, "ce-type": stored["type"], "sluice-subscription": sub}
            if "source" in stored:
                want_attrs["ce-source"] = stored["source"]
            assert m["attributes"] == want_attrs
    # The durable position passes the marker, and delivered counts the puts.
    c.await_sub(sa, "to count 7 delivered and pass the marker",
                lambda s: s["delivered"] >= 7 and s["position"] > marker["recordedAt"])


def test_start_from_now_earliest_and_a_time(acct):
    c = acct
    before = [put(c, "t.start", data={"i": i}) for i in range(3)]
    c.await_readable(before[-1]["recordedAt"])
    qn, qe, qt = (c.new_queue(p, strictFifo=True) for p in ("sn", "se", "st"))
    sn, se, stime = sub_name(), sub_name(), sub_name()
    assert_status(c.create_sub(sn, qn, {"types": ["t.start"]}), 201)
    assert_status(c.create_sub(se, qe, {"types": ["t.start"]}, start="earliest"), 201)
    t = before[1]["recordedAt"]
    s = assert_status(c.create_sub(stime, qt, {"types": ["t.start"]}, start=t), 201).json()
    assert s["startFrom"] == t
    # Another spelling of the same instant is the same definition.
    z = t.replace("Z", "+00:00")
    assert_status(c.create_sub(stime, qt, {"types": ["t.start"]}, start=z), 200)
    after = put(c, "t.start", data={"after": True})
    b = [e["id"] for e in before]
    assert ids_in_order(c.collect_events(qn, [after["id"]])) == [after["id"]]
    assert ids_in_order(c.collect_events(qe, b + [after["id"]])) == b + [after["id"]]
    assert ids_in_order(c.collect_events(qt, b[1:] + [after["id"]])) == b[1:] + [after["id"]]


def test_a_queue_deleted_and_made_again_loses_nothing(acct):
    c = acct
    q = c.new_queue("sd")
    s = sub_name()
    assert_status(c.create_sub(s, q, {"types": ["t.qd"]}), 201)
    first = put(c, "t.qd", data=1)
    c.collect_events(q, [first["id"]])
    assert_status(c.delete_queue(q), 200)
    gap = [put(c, "t.qd", data=i) for i in range(5)]
    c.await_sub(s, "to say queueMissing", lambda x: x["state"] == "queueMissing", timeout=60)
    more = put(c, "t.qd", data="more")
    held = c.get_sub(s).json()
    assert held["position"] <= gap[0]["recordedAt"], f"the position moved past undelivered events: {held}"
    r = c.create_queue(q, **{"repairWorkerPollSeconds": 1, "strictFifo": True})
    assert r.status_code == 201, describe(r)
    want = [e["id"] for e in gap] + [more["id"]]
    assert ids_in_order(c.collect_events(q, want, timeout=60)) == want
    c.await_sub(s, "to be active again", lambda x: x["state"] == "active", timeout=60)


def test_a_deleted_subscription_delivers_no_more(acct):
    c = acct
    q1, q2 = c.new_queue("sx"), c.new_queue("sy")
    s1, s2 = sub_name(), sub_name()
    assert_status(c.create_sub(s1, q1, {"types": ["t.del"]}), 201)
    assert_status(c.create_sub(s2, q2, {"types": ["t.del"]}), 201)
    a = put(c, "t.del")
    c.collect_events(q1, [a["id"]])
    assert_status(c.delete_sub(s1), 200)
    b = put(c, "t.del")
    c.collect_events(q2, [a["id"], b["id"]])
    m = put(c, "t.del")  # a round after b was put in q2: the worker has visited s1 since
    c.collect_events(q2, [m["id"]])
    assert c.receive_list(q1, 32, 30) == [], "a deleted subscription still put events"


def test_accounts_are_isolated(server, acct):
    c = acct
    other_name, other_key = server.admin().new_account("subs2")
    o = c.clone(account=other_name, key=other_key)
    qa = c.new_queue("si")
    qo = o.new_queue("si")
    s = sub_name()
    assert_status(c.create_sub(s, qa, {"types": ["t.iso"]}), 201)
    # Another account sees none of them, under its own path; its key opens nothing under this one.
    assert o.list_subs().json()["subscriptions"] == []
    assert assert_error(o.get_sub(s), 404)["code"] == "SubscriptionNotFound"
    assert_error(o.request("GET", c.ebase() + "/subscriptions"), 401)
    assert_error(o.request("DELETE", c.ebase() + f"/subscriptions/{s}"), 401)
    # Its queue is not this account's to name.
    assert assert_error(c.create_sub(sub_name(), qo), 404)["code"] == "QueueNotFound"
    so = sub_name()
    assert_status(o.create_sub(so, qo, {"types": ["t.iso"]}), 201)
    mine, theirs = put(c, "t.iso"), put(o, "t.iso")
    assert ids_in_order(c.collect_events(qa, [mine["id"]])) == [mine["id"]]
    assert ids_in_order(o.collect_events(qo, [theirs["id"]])) == [theirs["id"]]
    o.delete_sub(so)
    o.close()


def test_permission_levels(server, acct):
    c = acct
    q = c.new_queue("sp")
    s = sub_name()
    assert_status(c.create_sub(s, q), 201)
    admin = server.admin()
    acct_name = c.account
    qs = assert_status(admin.signed_url(acct_name, levels="r"), 200).json()["queryString"]
    path = c.ebase() + "/subscriptions"
    assert_error(c.s.get(c.base_url + path + "?" + qs), 403)
    qs = assert_status(admin.signed_url(acct_name, levels="g"), 200).json()["queryString"]
    r = c.s.get(c.base_url + path + "?" + qs)
    assert r.status_code == 200, describe(r)
    r = c.s.post(c.base_url + path + "?" + qs, json={"subscriptionName": sub_name(), "queueName": q})
    assert_error(r, 403)
    r = c.s.delete(c.base_url + path + f"/{s}?" + qs)
    assert_error(r, 403)


def test_every_answered_event_is_delivered_across_a_sigkill(server_factory, record_property):
    srv = server_factory("subcrash")
    c = srv.client()
    q = c.new_queue("sk")
    s = sub_name()
    assert_status(c.create_sub(s, q, {"types": ["t.crash"]}), 201)
    answered, stop = [], threading.Event()
    lock = threading.Lock()

    def writer(k):
        w = srv.client()
        i = 0
        while not stop.is_set():
            ev = {"id": f"w{k}-{i}", "type": "t.crash", "data": {"i": i}}
            i += 1
            try:
                r = w.put_event(ev)
            except Exception:  # noqa: BLE001 - the server was killed under it
                break
            if r.status_code in (200, 201):
                with lock:
                    answered.append((ev["id"], r.json()["recordedAt"]))
        w.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    # Kill once deliveries are under way (the cursor has moved), with a
    # query paged part of the way.
    c.await_sub(s, "to deliver", lambda x: x["delivered"] >= 50, timeout=60)
    page = assert_status(c.query_events({"type": "t.crash", "limit": "20"}), 200).json()
    assert page["continuation"], page
    srv.kill()
    stop.set()
    for t in threads:
        t.join()
    with lock:
        ids = [i for i, _ in answered]
        before_end = {i for i, at in answered if at < page["end"]}
    assert ids, "no ingest was answered before the kill"
    srv.start()
    c = srv.client()
    # The token issued before the kill finishes its paging exactly: every
    # answered event of its range once, in strict order.
    evs, token = list(page["events"]), page["continuation"]
    while token:
        p = assert_status(c.query_events({"continuation": token}), 200).json()
        evs += p["events"]
        token = p["continuation"]
    pos = [(e["recordedAt"], e["id"]) for e in evs]
    assert pos == sorted(set(pos)), "the pages after the restart repeat or reorder events"
    assert all(at < page["end"] for at, _ in pos), "an event past the frozen end"
    missing = before_end - {i for _, i in pos}
    assert not missing, f"{len(missing)} answered events missing from the paging, e.g. {sorted(missing)[:3]}"
    t0 = time.monotonic()
    msgs = c.collect_events(q, ids, timeout=120)
    got = [m["attributes"]["ce-id"] for m in msgs]
    dups = len(got) - len(set(got))
    summary = (f"subscription after SIGKILL: {len(ids)} answered ingests all delivered "
               f"({len(got)} messages, {dups} duplicates; {time.monotonic() - t0:.1f} s after restart)")
    print(summary)
    record_property("subscription_crash", summary)
    c.close()


def test_a_deleted_accounts_log_and_subscriptions_are_gone(server, client):
    admin = server.admin()
    name, key = admin.new_account("subdel")
    c = client.clone(account=name, key=key)
    q = c.new_queue("sg")
    s = sub_name()
    assert_status(c.create_sub(s, q), 201)
    assert_status(c.eventlog(60), 200)
    ev = put(c, "t.gone", data={"secret": 1})
    c.collect_events(q, [ev["id"]])
    assert_status(admin.delete_account(name), 200)
    # The same name made again starts with an empty log, no subscription and the default retention.
    r = admin.create_account(name)
    assert r.status_code == 201, describe(r)
    c = client.clone(account=name, key=r.json()["keys"]["primary"])
    assert assert_error(c.get_event(ev["id"]), 404)["code"] == "EventNotFound"
    page = assert_status(c.query_events({"start": "0"}), 200).json()
    assert page["events"] == [], page
    assert c.list_subs().json()["subscriptions"] == []
    assert assert_status(c.eventlog(), 200).json() == {"retentionSeconds": 604800}
    # The old event's id is free again: a new event under it is created, not matched.
    again = assert_status(c.put_event({"id": ev["id"], "type": "t.new"}), 201).json()
    assert assert_status(c.get_event(ev["id"]), 200).json()["type"] == "t.new"
    c.await_readable(again["recordedAt"])
    assert [e["id"] for e in c.query_events({"start": "0"}).json()["events"]] == [ev["id"]]
    c.close()
