"""Messages through the CassieQ routes: put, get next, update, ack, leases."""

import datetime
import time

import pytest

from sluice_client import (
    ISO_Z,
    MSG_LIMIT,
    assert_error,
    assert_status,
    await_until,
    describe,
    sleep_until,
)


def test_put_returns_201_with_message_id(client):
    q = client.new_queue("put")
    r = assert_status(client.put(q, "hello"), 201)
    mid = r.json().get("messageId")
    assert isinstance(mid, str) and mid, describe(r)
    mid2 = client.put_ok(q, "hello")
    assert mid2 != mid, "two puts got the same messageId"


def test_get_next_returns_full_message(client):
    q = client.new_queue("next")
    before = datetime.datetime.now(datetime.timezone.utc)
    mid = client.put_ok(q, "payload \u00e9\u00e8 {\"json\": true}")
    r = assert_status(client.get_next(q), 200)
    m = r.json()
    assert m.get("messageId") == mid, describe(r)
    assert isinstance(m.get("popReceipt"), str) and m["popReceipt"], describe(r)
    assert m.get("message") == "payload \u00e9\u00e8 {\"json\": true}", describe(r)
    assert m.get("deliveryCount") == 1, describe(r)
    assert isinstance(m.get("messageTag"), str) and m["messageTag"], describe(r)
    assert isinstance(m.get("enqueuedAt"), str) and ISO_Z.match(m["enqueuedAt"]), describe(r)
    t = datetime.datetime.strptime(m["enqueuedAt"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    assert abs((t - before).total_seconds()) < 120, f"enqueuedAt {m['enqueuedAt']} is not about now ({before})"
    assert m.get("attributes") == {}, describe(r)


def test_get_next_on_empty_queue_is_204(client):
    q = client.new_queue("empty")
    r = client.get_next(q)
    assert r.status_code == 204, describe(r)
    assert r.content == b"", describe(r)


def test_message_is_delivered_once_while_leased(client):
    q = client.new_queue("lease")
    client.put_ok(q, "only one")
    assert_status(client.get_next(q, invisibility=30), 200)
    r = client.get_next(q, invisibility=30)
    assert r.status_code == 204, f"leased message delivered again: {describe(r)}"


def test_initial_invisibility_is_respected(client):
    q = client.new_queue("initinvis")
    t0 = time.monotonic()
    mid = client.put_ok(q, "later", initial_invisibility=3)
    r = client.get_next(q)
    if time.monotonic() - t0 < 2.5:  # only meaningful while the delay surely runs
        assert r.status_code == 204, f"message put with initialInvisibilitySeconds=3 visible at once: {describe(r)}"
    m = await_until(lambda: (lambda r: r.json() if r.status_code == 200 else None)(client.get_next(q)),
                    timeout=15, interval=0.2, desc="the delayed message to become visible")
    assert m["messageId"] == mid and m["message"] == "later" and m["deliveryCount"] == 1


def test_expired_lease_redelivers_with_new_receipt(client):
    q = client.new_queue("redeliver")
    mid = client.put_ok(q, "again")
    first = assert_status(client.get_next(q, invisibility=1), 200).json()
    assert first["deliveryCount"] == 1

    def next_msg():
        r = client.get_next(q, invisibility=30)
        assert r.status_code in (200, 204), describe(r)
        return r.json() if r.status_code == 200 else None

    second = await_until(next_msg, timeout=15, interval=0.2, desc="redelivery after a 1 s lease")
    assert second["messageId"] == mid
    assert second["deliveryCount"] == 2
    assert second["popReceipt"] != first["popReceipt"]
    assert second["message"] == "again"
    # The first receipt is stale now; the new one acks.
    assert_error(client.ack(q, first["popReceipt"]), 409)
    assert_status(client.ack(q, second["popReceipt"]), 204)
    assert client.get_next(q).status_code == 204


def test_ack_then_ack_again_is_409(client):
    q = client.new_queue("ack")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q), 200).json()
    r = client.ack(q, m["popReceipt"])
    assert r.status_code == 204, describe(r)
    assert r.content == b""
    assert_error(client.ack(q, m["popReceipt"]), 409)
    assert client.get_next(q).status_code == 204
    client.await_stats(q, size=0)


def test_ack_after_lease_ran_out_before_redelivery_succeeds(client):
    q = client.new_queue("lateack")
    client.put_ok(q, "late")
    t = time.monotonic()
    m = assert_status(client.get_next(q, invisibility=1), 200).json()
    sleep_until(t + 2.0)  # the 1 s lease has surely run out; nobody received it since
    r = client.ack(q, m["popReceipt"])
    assert r.status_code == 204, f"API.md: an ack after the lease ran out but before a redelivery succeeds: {describe(r)}"
    # And it stays acked: never delivered again.
    assert client.get_next(q).status_code == 204
    client.await_stats(q, size=0)


def test_update_extends_invisibility(client):
    q = client.new_queue("extend")
    client.put_ok(q, "ext")
    t = time.monotonic()
    m = assert_status(client.get_next(q, invisibility=1), 200).json()
    r = assert_status(client.update(q, m["popReceipt"], new_invisibility=30), 200)
    u = r.json()
    assert isinstance(u.get("popReceipt"), str) and u["popReceipt"], describe(r)
    assert isinstance(u.get("messageTag"), str) and u["messageTag"], describe(r)
    sleep_until(t + 2.5)  # past the original 1 s lease
    r = client.get_next(q)
    assert r.status_code == 204, f"extended message became visible after its original lease: {describe(r)}"
    assert_status(client.ack(q, u["popReceipt"]), 204)


def test_message_tag_names_the_message_through_updates(client):
    """As in CassieQ, messageTag names the message: a new body and a new
    lease keep it (the pop receipt is what names a delivery)."""
    q = client.new_queue("tag")
    client.put_ok(q, "first")
    m = assert_status(client.get_next(q, invisibility=30), 200).json()
    u = assert_status(client.update(q, m["popReceipt"], new_invisibility=0, message="second"), 200).json()
    assert u["messageTag"] == m["messageTag"], (m, u)
    again = assert_status(client.get_next(q), 200).json()
    assert again["message"] == "second" and again["messageTag"] == m["messageTag"], (m, again)
    assert again["popReceipt"] != m["popReceipt"]
    assert_status(client.ack(q, again["popReceipt"]), 204)


def test_update_to_zero_returns_message_at_once(client):
    q = client.new_queue("zero")
    mid = client.put_ok(q, "back")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_status(client.update(q, m["popReceipt"], new_invisibility=0), 200)
    again = await_until(lambda: (lambda r: r.json() if r.status_code == 200 else None)(client.get_next(q)),
                        timeout=3, interval=0.05, desc="the message to come back after update to 0")
    assert again["messageId"] == mid
    assert again["deliveryCount"] == 2
    assert again["message"] == "back"


def test_update_changes_body(client):
    q = client.new_queue("body")
    mid = client.put_ok(q, "old body")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_status(client.update(q, m["popReceipt"], new_invisibility=0, message="new body \u2713"), 200)
    again = await_until(lambda: (lambda r: r.json() if r.status_code == 200 else None)(client.get_next(q)),
                        timeout=3, interval=0.05, desc="the updated message")
    assert again["messageId"] == mid
    assert again["message"] == "new body \u2713"


def test_old_receipt_is_invalid_after_update(client):
    q = client.new_queue("oldrcpt")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    u = assert_status(client.update(q, m["popReceipt"], new_invisibility=60), 200).json()
    assert u["popReceipt"] != m["popReceipt"]
    assert_error(client.ack(q, m["popReceipt"]), 409)
    assert_error(client.update(q, m["popReceipt"], new_invisibility=60), 409)
    assert_status(client.ack(q, u["popReceipt"]), 204)


def test_update_with_receipt_stale_after_redelivery_is_409(client):
    q = client.new_queue("stale")
    client.put_ok(q, "x")
    first = assert_status(client.get_next(q, invisibility=1), 200).json()
    second = await_until(lambda: (lambda r: r.json() if r.status_code == 200 else None)(client.get_next(q, invisibility=60)),
                         timeout=15, interval=0.2, desc="redelivery")
    assert_error(client.update(q, first["popReceipt"], new_invisibility=0), 409)
    # The stale update did not return the message to the queue.
    assert client.get_next(q).status_code == 204
    assert_status(client.update(q, second["popReceipt"], new_invisibility=60), 200)


def test_update_after_ack_is_409(client):
    q = client.new_queue("updack")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q), 200).json()
    assert_status(client.ack(q, m["popReceipt"]), 204)
    assert_error(client.update(q, m["popReceipt"], new_invisibility=0), 409)
    assert client.get_next(q).status_code == 204


@pytest.mark.parametrize("receipt", ["garbage", "AAAA", "x" * 300, "!!@@##", "%00"])
def test_garbage_receipt_is_4xx_never_5xx(client, receipt):
    q = client.new_queue("garbage")
    client.put_ok(q, "x")
    # API.md leaves 400 or 409 open for a receipt that is not one of the
    # server's; the server answers 400 InvalidPopReceipt, pinned here.
    assert_error(client.ack(q, receipt), 400)
    assert_error(client.update(q, receipt, new_invisibility=0), 400)
    # The message is untouched.
    m = assert_status(client.get_next(q), 200).json()
    assert m["deliveryCount"] == 1


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _near_receipts(receipt):
    """Every string that differs from receipt in one bit of one base64url
    character (or, for other characters, in one replaced character)."""
    out = []
    for i, ch in enumerate(receipt):
        if ch in B64URL:
            v = B64URL.index(ch)
            for k in range(6):
                out.append(receipt[:i] + B64URL[v ^ (1 << k)] + receipt[i + 1:])
        else:
            out.append(receipt[:i] + ("A" if ch != "A" else "B") + receipt[i + 1:])
    return out


def test_tampered_receipt_never_acks(client):
    """A receipt names one delivery of one message: no near variant of it
    acks or updates anything (unless it is, by chance, another real one)."""
    q = client.new_queue("tamper")
    assert_status(client.put_batch(q, ["a", "b", "c"]), 201)
    leased = []
    await_until(lambda: leased.extend(client.receive_list(q, 3, 60)) or len(leased) >= 3, timeout=10,
                desc="3 leased messages")
    real = {m["popReceipt"] for m in leased}
    rc = leased[0]["popReceipt"]
    for t in _near_receipts(rc):
        if t in real:
            continue
        r = client.ack(q, t)
        assert r.status_code in (400, 409), f"tampered receipt {t!r} (from {rc!r}): {describe(r)}"
        assert_error(r, r.status_code)
    # Nothing was acked: all three are still in flight and their receipts work.
    client.await_stats(q, size=3, inFlight=3)
    for m in leased:
        assert_status(client.ack(q, m["popReceipt"]), 204)


def test_receipt_of_another_queue_does_not_ack(client):
    q1 = client.new_queue("rq1")
    q2 = client.new_queue("rq2")
    client.put_ok(q1, "one")
    client.put_ok(q2, "two")
    m1 = assert_status(client.get_next(q1, invisibility=60), 200).json()
    m2 = assert_status(client.get_next(q2, invisibility=60), 200).json()
    assert_error(client.ack(q2, m1["popReceipt"]), 400, 409)
    assert_error(client.ack(q1, m2["popReceipt"]), 400, 409)
    assert_status(client.ack(q1, m1["popReceipt"]), 204)
    assert_status(client.ack(q2, m2["popReceipt"]), 204)


def test_receipt_from_before_queue_recreate_does_not_ack(client):
    q = client.new_queue("recreate")
    client.put_ok(q, "old")
    old = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_status(client.delete_queue(q), 200)
    assert_status(client.create_queue(q), 201)
    client.put_ok(q, "new")
    new = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert new["message"] == "new"
    assert_error(client.ack(q, old["popReceipt"]), 400, 404, 409)
    client.await_stats(q, size=1, inFlight=1)
    assert_status(client.ack(q, new["popReceipt"]), 204)


def test_missing_receipt_is_400(client):
    q = client.new_queue("norcpt")
    assert_error(client.request("DELETE", client.qpath(q, "/messages")), 400)
    assert_error(client.request("DELETE", client.qpath(q, "/messages"), params={"popReceipt": ""}), 400)
    assert_error(client.request("PUT", client.qpath(q, "/messages"), json={"newInvisibilitySeconds": 0}), 400)


@pytest.mark.parametrize("body", [
    {"newInvisibilitySeconds": -1},
    {"newInvisibilitySeconds": 604801},
    {"newInvisibilitySeconds": "abc"},
    {"newInvisibilitySeconds": 1.5},
    {"message": 5, "newInvisibilitySeconds": 0},
    ["newInvisibilitySeconds", 0],
])
def test_update_with_bad_body_is_400(client, body):
    q = client.new_queue("updbad")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_error(client.update(q, m["popReceipt"], body=body), 400)
    # The receipt still works after the rejected update.
    assert_status(client.ack(q, m["popReceipt"]), 204)


def test_update_with_malformed_json_is_400(client):
    q = client.new_queue("updjson")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    r = client.request("PUT", client.qpath(q, "/messages"), params={"popReceipt": m["popReceipt"]},
                       data=b'{"newInvisibilitySeconds": ', headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_message_of_exactly_1_mib_is_accepted(client):
    q = client.new_queue("big")
    body = ("0123456789abcdef" * (MSG_LIMIT // 16))
    assert len(body.encode()) == MSG_LIMIT
    mid = client.put_ok(q, body)
    m = assert_status(client.get_next(q), 200).json()
    assert m["messageId"] == mid
    assert m["message"] == body


def test_message_over_1_mib_is_413(client):
    q = client.new_queue("toobig")
    assert_error(client.put(q, "x" * (MSG_LIMIT + 1)), 413)
    assert_error(client.put(q, "x" * (4 * MSG_LIMIT)), 413)
    assert client.get_next(q).status_code == 204
    client.await_stats(q, size=0)


def test_empty_message_is_accepted_or_400(client):
    q = client.new_queue("emptymsg")
    r = client.put(q, "")
    assert r.status_code in (201, 400), describe(r)
    if r.status_code == 400:
        assert_error(r, 400)
    else:
        m = assert_status(client.get_next(q), 200).json()
        assert m["message"] == ""


@pytest.mark.parametrize("value", ["-1", "abc", "604801", "1.5", "", "99999999999999999999999"])
def test_bad_invisibility_query_is_400(client, value):
    q = client.new_queue("badq")
    client.put_ok(q, "x")
    r = client.request("GET", client.qpath(q, "/messages/next"), params={"invisibilityTimeSeconds": value})
    assert_error(r, 400)
    r = client.request("POST", client.qpath(q, "/messages"), params={"initialInvisibilitySeconds": value},
                       data=b"y", headers={"Content-Type": "text/plain"})
    assert_error(r, 400)
    # Nothing was leased or put by the rejected requests.
    m = assert_status(client.get_next(q), 200).json()
    assert m["message"] == "x" and m["deliveryCount"] == 1
    assert client.get_next(q).status_code == 204


def test_invisibility_limits_are_accepted(client):
    q = client.new_queue("limits")
    client.put_ok(q, "x", initial_invisibility=604800)
    client.put_ok(q, "y", initial_invisibility=0)
    m = assert_status(client.get_next(q, invisibility=604800), 200).json()
    assert m["message"] == "y"
    assert client.get_next(q).status_code == 204


def test_body_with_nul_and_control_bytes_round_trips(client):
    q = client.new_queue("nul")
    body = "a\x00b\x01c\nd\te\"f\\g\u2028h"
    mid = client.put_ok(q, body)
    r = assert_status(client.get_next(q), 200)
    m = r.json()
    assert m["messageId"] == mid
    assert m["message"] == body, f"body changed on the way: {m['message']!r}"


def test_invalid_utf8_body_is_400_or_round_trips(client):
    """Message is a JSON string, so a body that is not UTF-8 cannot be
    delivered as is: either the put is refused (400), or receiving it
    still gives valid JSON."""
    q = client.new_queue("utf8")
    r = client.put(q, b"bad \xff\xfe utf8")
    if r.status_code == 400:
        assert_error(r, 400)
        assert client.get_next(q).status_code == 204
    else:
        assert r.status_code == 201, describe(r)
        g = assert_status(client.get_next(q), 200)
        g.json()


def test_update_without_new_invisibility_is_400(client):
    q = client.new_queue("updreq")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_error(client.update(q, m["popReceipt"], body={}), 400)
    assert_error(client.update(q, m["popReceipt"], body={"message": "only a body"}), 400)
    assert_status(client.ack(q, m["popReceipt"]), 204)


def test_update_with_too_big_body_is_413(client):
    q = client.new_queue("updbig")
    client.put_ok(q, "small")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_error(client.update(q, m["popReceipt"], new_invisibility=0, message="x" * (MSG_LIMIT + 1)), 413)
    # The rejected update left the lease and the body alone.
    assert client.get_next(q).status_code == 204
    assert_status(client.update(q, m["popReceipt"], new_invisibility=0), 200)
    again = await_until(lambda: (lambda r: r.json() if r.status_code == 200 else None)(client.get_next(q)),
                        timeout=3, interval=0.05, desc="the message")
    assert again["message"] == "small"


def test_many_puts_keep_order_of_ids_distinct(client):
    q = client.new_queue("distinct")
    ids = [client.put_ok(q, f"m{i}") for i in range(50)]
    assert len(set(ids)) == 50
    got = client.drain(q)
    assert sorted(m["messageId"] for m in got) == sorted(ids)
    assert {m["messageId"]: m["message"] for m in got} == {i: f"m{n}" for n, i in enumerate(ids)}


def test_strict_fifo_single_consumer_gets_put_order(client):
    """DESIGN.md guarantee 5: with strictFifo and one consumer on one node,
    messages come in put order."""
    q = client.new_queue("fifo", strictFifo=True, bucketSize=5)
    ids = [client.put_ok(q, f"m{i}") for i in range(12)]
    r = assert_status(client.put_batch(q, [f"b{i}" for i in range(12)]), 201)
    ids += r.json()["messageIds"]
    got = []
    for _ in range(len(ids)):
        m = assert_status(client.get_next(q, invisibility=60), 200).json()
        got.append(m["messageId"])
        assert_status(client.ack(q, m["popReceipt"]), 204)
    assert got == ids, "strictFifo delivered out of put order"
    assert client.get_next(q).status_code == 204


def test_ack_on_deleted_queue_is_404(client):
    q = client.new_queue("ackdel")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_status(client.delete_queue(q), 200)
    assert_error(client.ack(q, m["popReceipt"]), 404)
    assert_error(client.update(q, m["popReceipt"], new_invisibility=0), 404)
