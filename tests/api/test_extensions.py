"""Queue API extensions: batch put, receive, long polling, batch ack, peek,
purge, dead-lettering and redrive."""

import http.client
import json
import threading
import time
import urllib.parse

import pytest

from sluice_client import (
    MSG_LIMIT,
    assert_error,
    assert_status,
    await_until,
    describe,
    sleep_until,
)


def _msg_or_none(r):
    assert r.status_code in (200, 204), describe(r)
    return r.json() if r.status_code == 200 else None


# --- batch put ---------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 100])
def test_batch_put(client, n):
    q = client.new_queue("batch")
    bodies = [f"m{i}" for i in range(n)]
    r = assert_status(client.put_batch(q, bodies), 201)
    ids = r.json().get("messageIds")
    assert isinstance(ids, list) and len(ids) == n, describe(r)
    assert len(set(ids)) == n, "duplicate message ids in one batch"
    got = client.drain(q)
    assert sorted(m["message"] for m in got) == sorted(bodies)
    assert {m["messageId"]: m["message"] for m in got} == dict(zip(ids, bodies)), "ids do not match bodies"


@pytest.mark.parametrize("n", [0, 101])
def test_batch_put_size_out_of_range_is_400(client, n):
    q = client.new_queue("batchbad")
    assert_error(client.put_batch(q, [f"m{i}" for i in range(n)]), 400)
    client.await_stats(q, size=0)
    assert client.get_next(q).status_code == 204


@pytest.mark.parametrize("body", [
    {},
    {"messages": "x"},
    {"messages": [1, 2]},
    {"messages": [{"nomessage": "x"}]},
    {"messages": [{"message": 5}]},
    {"messages": [{"message": "x", "delaySeconds": -1}]},
    {"messages": [{"message": "x", "delaySeconds": 604801}]},
    {"messages": [{"message": "x", "delaySeconds": "1"}]},
    {"messages": [{"message": "x", "attributes": "k=v"}]},
    {"messages": [{"message": "x", "attributes": {"k": 5}}]},
    {"messages": [{"message": "x", "attributes": ["k", "v"]}]},
    [{"message": "x"}],
])
def test_batch_put_bad_entries_are_400(client, body):
    q = client.new_queue("batchent")
    assert_error(client.request("POST", client.qpath(q, "/messages/batch"), json=body), 400)
    # All or nothing: a rejected batch puts nothing.
    assert client.get_next(q).status_code == 204


def test_batch_put_with_one_bad_entry_puts_nothing(client):
    q = client.new_queue("batchall")
    body = {"messages": [{"message": "ok"}, {"message": "x", "delaySeconds": -5}]}
    assert_error(client.request("POST", client.qpath(q, "/messages/batch"), json=body), 400)
    assert client.get_next(q).status_code == 204


def test_batch_put_over_size_limit_is_413(client):
    q = client.new_queue("batchbig")
    r = client.put_batch(q, ["x" * (MSG_LIMIT + 1)])
    assert_error(r, 413)
    # A batch may carry one message of the largest size.
    body = "0123456789abcdef" * (MSG_LIMIT // 16)
    assert_status(client.put_batch(q, [body]), 201)
    r = assert_status(client.request("POST", client.qpath(q, "/messages/receive"), json={"maxMessages": 1}), 200)
    assert [m["message"] for m in r.json()["messages"]] == [body]


def test_batch_delay_and_attributes(client):
    q = client.new_queue("delayattr")
    t0 = time.monotonic()
    r = assert_status(client.put_batch(q, [
        {"message": "now", "attributes": {"color": "red", "n": "1"}},
        {"message": "later", "delaySeconds": 3, "attributes": {"color": "blue"}},
    ]), 201)
    now_id, later_id = r.json()["messageIds"]
    msgs = client.receive_list(q, 10, 60)
    if time.monotonic() - t0 < 2.5:
        assert [m["message"] for m in msgs] == ["now"], f"delayed message visible at once: {msgs}"
    m = next(m for m in msgs if m["message"] == "now")
    assert m["messageId"] == now_id
    assert m["attributes"] == {"color": "red", "n": "1"}
    later = await_until(lambda: client.receive_list(q, 10, 60), timeout=15, interval=0.2,
                        desc="the delayed message")
    assert [x["messageId"] for x in later] == [later_id]
    assert later[0]["attributes"] == {"color": "blue"}
    assert later[0]["deliveryCount"] == 1


def test_attributes_survive_get_next_and_peek(client):
    q = client.new_queue("attrs")
    assert_status(client.put_batch(q, [{"message": "a", "attributes": {"k": "v \u00fc"}}]), 201)
    p = assert_status(client.peek(q, 1), 200).json()["messages"]
    assert p and p[0]["attributes"] == {"k": "v \u00fc"}, p
    m = assert_status(client.get_next(q), 200).json()
    assert m["attributes"] == {"k": "v \u00fc"}


# --- receive -----------------------------------------------------------------

def test_receive_defaults_to_one_message(client):
    q = client.new_queue("recv1")
    assert_status(client.put_batch(q, ["a", "b", "c"]), 201)
    r = assert_status(client.receive(q), 200)
    msgs = r.json()["messages"]
    assert len(msgs) == 1, describe(r)
    m = msgs[0]
    for k in ("messageId", "popReceipt", "message", "deliveryCount", "messageTag", "enqueuedAt", "attributes"):
        assert k in m, f"received message lacks {k}: {m}"


@pytest.mark.parametrize("mx", [1, 5, 32])
def test_receive_max_messages(client, mx):
    q = client.new_queue("recvmax")
    assert_status(client.put_batch(q, [f"m{i}" for i in range(40)]), 201)
    msgs = client.receive_list(q, mx, 60)
    assert 1 <= len(msgs) <= mx, f"got {len(msgs)} for maxMessages {mx}"
    assert len({m["messageId"] for m in msgs}) == len(msgs), "duplicates in one receive"
    assert len({m["popReceipt"] for m in msgs}) == len(msgs)
    # Everything not leased is still there, and nothing is delivered twice.
    rest = client.drain(q)
    seen = [m["messageId"] for m in msgs] + [m["messageId"] for m in rest]
    assert len(seen) == 40 and len(set(seen)) == 40


def test_receive_fills_up_to_max_when_enough_are_visible(client):
    q = client.new_queue("recvfill")
    assert_status(client.put_batch(q, [f"m{i}" for i in range(50)]), 201)
    got = set()
    # Several receives of 32 must account for all 50 messages, without repeats.
    for _ in range(20):
        msgs = client.receive_list(q, 32, 60)
        for m in msgs:
            assert m["messageId"] not in got, "leased message delivered again"
            got.add(m["messageId"])
        if len(got) == 50:
            break
    assert len(got) == 50


@pytest.mark.parametrize("body", [
    {"maxMessages": 33},
    {"maxMessages": 0},
    {"maxMessages": -1},
    {"maxMessages": "5"},
    {"waitSeconds": 21},
    {"waitSeconds": -1},
    {"invisibilitySeconds": -1},
    {"invisibilitySeconds": 604801},
    {"invisibilitySeconds": "abc"},
    {"maxMessages": 10 ** 30},
    ["maxMessages", 1],
])
def test_receive_bad_parameters_are_400(client, body):
    q = client.new_queue("recvbad")
    client.put_ok(q, "x")
    assert_error(client.request("POST", client.qpath(q, "/messages/receive"), json=body), 400)
    m = assert_status(client.get_next(q), 200).json()
    assert m["deliveryCount"] == 1, "a rejected receive leased the message"


def test_long_poll_wakes_on_put_from_another_client(client):
    q = client.new_queue("longpoll")
    u = urllib.parse.urlsplit(client.base_url)
    sent = threading.Event()
    result = {}

    def waiter():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            body = json.dumps({"maxMessages": 1, "invisibilitySeconds": 30, "waitSeconds": 10})
            conn.request("POST", client.qpath(q, "/messages/receive"), body=body,
                         headers={"Content-Type": "application/json", **client._auth_headers("POST", "", None, body)})
            result["t_sent"] = time.monotonic()
            sent.set()
            resp = conn.getresponse()
            result["status"] = resp.status
            result["body"] = resp.read()
            result["t_done"] = time.monotonic()
        except Exception as e:  # reported by the assertions below
            result["error"] = repr(e)
            sent.set()
        finally:
            conn.close()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert sent.wait(10), "the receive request was never sent"
    # Let the server park the request first. This wait only makes sure the
    # test exercises the parked path; it decides no outcome.
    time.sleep(1.0)
    assert "t_done" not in result, f"waitSeconds=10 on an empty queue answered at once: {result}"
    putter = client.clone()
    mid = putter.put_ok(q, "wake up")
    t_put = time.monotonic()
    t.join(15)
    putter.close()
    assert "error" not in result, result
    assert result.get("status") == 200, result
    msgs = json.loads(result["body"])["messages"]
    assert [m["messageId"] for m in msgs] == [mid], result
    wake = result["t_done"] - t_put
    assert wake < 3.0, f"long poll answered {wake:.2f} s after the put (must be < 3 s)"


def test_long_poll_wakes_on_lease_expiry(client):
    q = client.new_queue("lpexp")
    client.put_ok(q, "x")
    first = client.receive_list(q, 1, 1)
    assert len(first) == 1
    t0 = time.monotonic()
    r = assert_status(client.receive(q, 1, 30, 10), 200)
    took = time.monotonic() - t0
    msgs = r.json()["messages"]
    assert len(msgs) == 1 and msgs[0]["deliveryCount"] == 2, f"after {took:.2f} s: {describe(r)}"
    assert took < 5.0, f"lease of 1 s ran out, yet the long poll answered only after {took:.2f} s"


def test_empty_long_poll_returns_empty_list_after_wait(client):
    q = client.new_queue("lpempty")
    t0 = time.monotonic()
    r = assert_status(client.receive(q, 1, 30, 1), 200)
    took = time.monotonic() - t0
    assert r.json() == {"messages": []}, describe(r)
    assert took >= 0.9, f"waitSeconds=1 answered after {took:.2f} s"
    assert took < 5.0, f"waitSeconds=1 answered after {took:.2f} s"


def test_receive_without_wait_on_empty_queue_is_200_empty(client):
    q = client.new_queue("nowait")
    r = assert_status(client.receive(q, 5, 30, 0), 200)
    assert r.json() == {"messages": []}, describe(r)


def test_many_parked_long_polls_all_answer(client):
    """Long polls must not each hold a server thread: 40 parked at once, then
    one put per poll; every poll gets a message or an empty list in time and
    the server still answers other requests meanwhile."""
    q = client.new_queue("lpmany")
    n = 40
    results = []
    lock = threading.Lock()

    def waiter():
        c = client.clone()
        try:
            r = c.receive(q, 1, 60, 5, timeout=30)
            with lock:
                results.append((r.status_code, r.json() if r.status_code == 200 else r.text))
        except Exception as e:
            with lock:
                results.append(("error", repr(e)))
        finally:
            c.close()

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # give the polls time to park; decides no outcome
    t0 = time.monotonic()
    h = client.health()
    assert h.status_code == 200 and time.monotonic() - t0 < 3.0, "server unresponsive while long polls are parked"
    assert_status(client.put_batch(q, [f"m{i}" for i in range(n)]), 201)
    for t in threads:
        t.join(30)
    assert len(results) == n, f"{n - len(results)} long polls never answered"
    errors = [x for x in results if x[0] != 200]
    assert not errors, errors[:5]
    got = [m["messageId"] for _, b in results for m in b["messages"]]
    assert len(got) == len(set(got)), "a message was delivered to two parked polls"
    rest = client.drain(q, invisibility=60)
    assert len(got) + len(rest) == n


# --- batch ack ---------------------------------------------------------------

def test_batch_ack_reports_each_receipt(client):
    q = client.new_queue("ackbatch")
    assert_status(client.put_batch(q, ["a", "b", "c", "d"]), 201)
    msgs = []
    await_until(lambda: msgs.extend(client.receive_list(q, 4, 60)) or len(msgs) >= 4, timeout=10,
                desc="receiving 4 messages")
    by_body = {m["message"]: m for m in msgs}
    # Already acked: stale.
    assert_status(client.ack(q, by_body["a"]["popReceipt"]), 204)
    # Superseded by an update: stale.
    u = assert_status(client.update(q, by_body["b"]["popReceipt"], new_invisibility=60), 200).json()
    receipts = [
        by_body["a"]["popReceipt"],
        by_body["b"]["popReceipt"],
        by_body["c"]["popReceipt"],
        u["popReceipt"],
        by_body["d"]["popReceipt"],
    ]
    r = assert_status(client.ack_batch(q, receipts), 200)
    results = r.json().get("results")
    assert isinstance(results, list) and len(results) == len(receipts), describe(r)
    assert [x.get("popReceipt") for x in results] == receipts, describe(r)
    assert [x.get("status") for x in results] == [409, 409, 204, 204, 204], describe(r)
    client.await_stats(q, size=0)
    assert client.get_next(q).status_code == 204


def test_batch_ack_twice_second_is_all_409(client):
    q = client.new_queue("acktwice")
    assert_status(client.put_batch(q, ["a", "b"]), 201)
    got = []
    await_until(lambda: got.extend(client.receive_list(q, 2, 60)) or len(got) >= 2, timeout=10, desc="2 messages")
    receipts = [m["popReceipt"] for m in got]
    r1 = assert_status(client.ack_batch(q, receipts), 200).json()["results"]
    assert [x["status"] for x in r1] == [204, 204]
    r2 = assert_status(client.ack_batch(q, receipts), 200).json()["results"]
    assert [x["status"] for x in r2] == [409, 409]


def test_batch_ack_echoes_foreign_receipts_exactly(client):
    """Receipts that are not ours come back as sent, in valid JSON, each with
    400, beside a real one that is acked: quotes, backslashes, control
    characters, non-ASCII text, one too long to be a receipt."""
    q = client.new_queue("ackecho")
    assert_status(client.put(q, "m"), 201)
    got = []
    await_until(lambda: got.extend(client.receive_list(q, 1, 60)) or got, timeout=10, desc="1 message")
    odd = ['"quoted"', "back\\slash", "tab\tnew\nline\u0001", "caf\u00e9 \u65e5\u672c \U0001f600", "</script>",
           "x" * 5000]
    receipts = odd[:3] + [got[0]["popReceipt"]] + odd[3:]
    r = assert_status(client.ack_batch(q, receipts), 200)
    results = r.json()["results"]
    assert [x["popReceipt"] for x in results] == receipts, describe(r)
    assert [x["status"] for x in results] == [400, 400, 400, 204, 400, 400, 400], describe(r)
    client.await_stats(q, size=0)


@pytest.mark.parametrize("n", [0, 101])
def test_batch_ack_size_out_of_range_is_400(client, n):
    q = client.new_queue("ackbad")
    assert_error(client.ack_batch(q, ["r"] * n), 400)


@pytest.mark.parametrize("body", [{}, {"popReceipts": "r"}, {"popReceipts": [1]}, ["r"]])
def test_batch_ack_bad_body_is_400(client, body):
    q = client.new_queue("ackbody")
    assert_error(client.request("POST", client.qpath(q, "/messages/ack"), json=body), 400)


# --- peek --------------------------------------------------------------------

def test_peek_does_not_lease_or_count(client):
    q = client.new_queue("peek")
    r = assert_status(client.put_batch(q, ["a", "b", "c"]), 201)
    ids = set(r.json()["messageIds"])
    for _ in range(3):
        r = assert_status(client.peek(q, 32), 200)
        msgs = r.json()["messages"]
        assert {m["messageId"] for m in msgs} == ids, describe(r)
        for m in msgs:
            assert not m.get("popReceipt"), f"peek returned a receipt: {m}"
            assert m.get("deliveryCount", 0) == 0, f"never-delivered message peeked with deliveryCount: {m}"
            assert m["message"] in ("a", "b", "c")
    # Nothing was hidden: all three are received at once, each for the first time.
    got = client.drain(q)
    assert {m["messageId"] for m in got} == ids
    assert all(m["deliveryCount"] == 1 for m in got), got


def test_a_peek_right_after_a_receive_does_not_show_what_it_leased(client):
    """The embedded store answers a lease before its commit is on disk; a
    peek sent after that answer must still see the lease (read your own
    writes), here 30 times in a row, each right after its receive."""
    q = client.new_queue("peeklease")
    assert_status(client.put_batch(q, [f"m{i}" for i in range(30)]), 201)
    for i in range(30):
        got = client.receive_list(q, 1, 60)
        assert len(got) == 1, f"receive {i}: {got}"
        r = assert_status(client.peek(q, 32), 200)
        shown = {m["messageId"] for m in r.json()["messages"]}
        assert got[0]["messageId"] not in shown, f"peek {i} shows the message receive {i} leased"
        assert len(shown) == 29 - i, describe(r)


def test_peek_count(client):
    q = client.new_queue("peekcount")
    assert_status(client.put_batch(q, [f"m{i}" for i in range(10)]), 201)
    msgs = assert_status(client.peek(q, 3), 200).json()["messages"]
    assert 1 <= len(msgs) <= 3
    msgs = assert_status(client.peek(q), 200).json()["messages"]
    assert len(msgs) >= 1
    assert assert_status(client.peek(client.new_queue("peekempty"), 5), 200).json() == {"messages": []}


@pytest.mark.parametrize("count", ["0", "33", "-1", "abc"])
def test_peek_bad_count_is_400(client, count):
    q = client.new_queue("peekbad")
    assert_error(client.request("GET", client.qpath(q, "/messages/peek"), params={"count": count}), 400)


def test_peek_does_not_change_delivery_count_of_redelivered(client):
    q = client.new_queue("peekdc")
    client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    assert_status(client.update(q, m["popReceipt"], new_invisibility=0), 200)
    p = await_until(lambda: assert_status(client.peek(q, 1), 200).json()["messages"], timeout=3, desc="peek")
    assert p[0]["deliveryCount"] == 1, p
    m2 = assert_status(client.get_next(q), 200).json()
    assert m2["deliveryCount"] == 2


# --- purge -------------------------------------------------------------------

def test_purge_removes_everything_enqueued_before(client):
    q = client.new_queue("purge")
    assert_status(client.put_batch(q, [f"m{i}" for i in range(25)]), 201)
    client.put_ok(q, "delayed", initial_invisibility=2)
    t = time.monotonic()
    leased = assert_status(client.get_next(q, invisibility=1), 200).json()
    r = client.purge(q)
    assert r.status_code == 204, describe(r)
    assert client.get_next(q).status_code == 204
    client.await_stats(q, size=0, visible=0, inFlight=0, delayed=0)
    # Neither the leased nor the delayed message comes back after its time.
    sleep_until(t + 3.0)
    r = client.receive(q, 32, 30, 1)
    assert_status(r, 200)
    assert r.json()["messages"] == [], f"purged messages came back: {describe(r)}"
    assert leased["messageId"]
    # A message put after the purge is delivered.
    mid = client.put_ok(q, "after")
    m = assert_status(client.get_next(q), 200).json()
    assert m["messageId"] == mid and m["message"] == "after"
    client.await_stats(q, size=1, inFlight=1)


def test_purge_unknown_queue_is_404(client):
    assert_error(client.purge("nosuch-purge-queue"), 404)


# --- dead-lettering and redrive ----------------------------------------------

def test_dead_letter_and_redrive(client):
    dlq = client.new_queue("dlq")
    src = client.new_queue("src", maxDeliveryCount=2, dlqName=dlq)
    mid = client.put_ok(src, "poison")

    t1 = time.monotonic()
    m1 = assert_status(client.get_next(src, invisibility=1), 200).json()
    assert m1["deliveryCount"] == 1
    m2 = await_until(lambda: _msg_or_none(client.get_next(src, invisibility=1)), timeout=15, interval=0.2,
                     desc="second delivery")
    t2 = time.monotonic()
    assert m2["deliveryCount"] == 2 and m2["messageId"] == mid
    assert t2 >= t1
    # After the second lease runs out, the next receive attempt must not
    # deliver it a third time: it moves to the DLQ at the latest then.
    sleep_until(t2 + 1.5)
    for _ in range(5):
        r = client.get_next(src, invisibility=1)
        assert r.status_code == 204, f"delivered beyond maxDeliveryCount=2: {describe(r)}"
        time.sleep(0.2)
    st = client.await_stats(src, deadLettered=1, size=0)
    assert st["visible"] == 0 and st["inFlight"] == 0

    # The DLQ holds it.
    d = await_until(lambda: _msg_or_none(client.get_next(dlq, invisibility=60)), timeout=10, interval=0.2,
                    desc="the message in the DLQ")
    assert d["message"] == "poison"
    # Return it to the DLQ at once, then redrive it back to the source.
    assert_status(client.update(dlq, d["popReceipt"], new_invisibility=0), 200)
    r = assert_status(client.redrive(dlq, src), 200)
    assert r.json().get("moved") == 1, describe(r)
    client.await_stats(dlq, size=0)

    back = await_until(lambda: _msg_or_none(client.get_next(src, invisibility=60)), timeout=10, interval=0.2,
                       desc="the redriven message in the source queue")
    assert back["message"] == "poison"
    assert back["deliveryCount"] == 1, f"redriven message must start again: {back}"
    assert_status(client.ack(src, back["popReceipt"]), 204)
    client.await_stats(src, size=0)


def test_redrive_counts_every_message(client):
    dlq = client.new_queue("dlq2")
    src = client.new_queue("src2", maxDeliveryCount=1, dlqName=dlq)
    assert_status(client.put_batch(dlq, [f"m{i}" for i in range(5)]), 201)
    r = assert_status(client.redrive(dlq, src), 200)
    assert r.json() == {"moved": 5}, describe(r)
    got = client.drain(src)
    assert sorted(m["message"] for m in got) == [f"m{i}" for i in range(5)]
    assert all(m["deliveryCount"] == 1 for m in got)
    assert assert_status(client.redrive(dlq, src), 200).json() == {"moved": 0}


def test_no_dlq_means_no_dead_lettering(client):
    q = client.new_queue("nodlq", maxDeliveryCount=1)
    mid = client.put_ok(q, "keep")
    client.get_next(q, invisibility=1)
    # Without a dlqName, maxDeliveryCount is not enforced: redelivered again.
    m = await_until(lambda: _msg_or_none(client.get_next(q, invisibility=1)), timeout=15, interval=0.2,
                    desc="second delivery")
    assert m["messageId"] == mid and m["deliveryCount"] == 2
    m = await_until(lambda: _msg_or_none(client.get_next(q, invisibility=60)), timeout=15, interval=0.2,
                    desc="third delivery")
    assert m["messageId"] == mid and m["deliveryCount"] == 3


@pytest.mark.parametrize("body", [{}, {"to": 5}, {"to": "bad name"}, ["to"]])
def test_redrive_bad_body_is_400(client, body):
    dlq = client.new_queue("rdbad")
    assert_error(client.request("POST", client.qpath(dlq, "/redrive"), json=body), 400)


def test_redrive_to_missing_queue_is_404_or_400(client):
    dlq = client.new_queue("rdmiss")
    assert_error(client.redrive(dlq, "no-such-queue-rd"), 400, 404)


def _park_receive(client, q, wait, invis=30):
    """Starts a long poll on its own client in a thread; returns (thread,
    result dict with status, messages, t_done)."""
    result = {}
    c = client.clone()

    def run():
        try:
            r = c.receive(q, 1, invis, wait, timeout=wait + 30)
            result["status"] = r.status_code
            result["body"] = r.text
            result["messages"] = r.json().get("messages") if r.status_code == 200 else None
        except Exception as e:
            result["error"] = repr(e)
        finally:
            result["t_done"] = time.monotonic()
            c.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_long_poll_wakes_on_update_to_zero(client):
    q = client.new_queue("lpupd")
    mid = client.put_ok(q, "x")
    m = assert_status(client.get_next(q, invisibility=60), 200).json()
    t, result = _park_receive(client, q, 10)
    time.sleep(1.0)  # let it park; decides no outcome
    assert "t_done" not in result, f"long poll answered while nothing was visible: {result}"
    assert_status(client.update(q, m["popReceipt"], new_invisibility=0), 200)
    t_upd = time.monotonic()
    t.join(15)
    assert result.get("status") == 200, result
    assert [x["messageId"] for x in result["messages"]] == [mid], result
    assert result["t_done"] - t_upd < 3.0, f"woke {result['t_done'] - t_upd:.2f} s after update to 0"


def test_long_poll_wakes_when_delay_ends(client):
    q = client.new_queue("lpdelay")
    t_put = time.monotonic()
    mid = client.put_ok(q, "later", initial_invisibility=2)
    t, result = _park_receive(client, q, 15)
    t.join(25)
    assert result.get("status") == 200, result
    assert [x["messageId"] for x in result["messages"]] == [mid], result
    took = result["t_done"] - t_put
    assert took < 2.0 + 3.0, f"delayed message (2 s) reached the parked poll only after {took:.2f} s"


def test_long_poll_on_deleted_queue_answers_without_5xx(client):
    q = client.new_queue("lpdel")
    t, result = _park_receive(client, q, 5)
    time.sleep(0.5)  # let it park; decides no outcome
    assert_status(client.delete_queue(q), 200)
    t.join(20)
    assert "error" not in result, result
    assert result.get("status") in (200, 404), f"long poll on a deleted queue: {result}"


def test_redriven_messages_peek_with_delivery_count_zero(client):
    dlq = client.new_queue("rdpeekdlq")
    src = client.new_queue("rdpeeksrc")
    client.put_ok(dlq, "x")
    m = assert_status(client.get_next(dlq, invisibility=1), 200).json()
    assert_status(client.update(dlq, m["popReceipt"], new_invisibility=0), 200)
    assert assert_status(client.redrive(dlq, src), 200).json() == {"moved": 1}
    p = await_until(lambda: assert_status(client.peek(src, 5), 200).json()["messages"], timeout=5, desc="peek")
    assert [x["deliveryCount"] for x in p] == [0], p
    # The old DLQ receipt acks nothing now.
    assert_error(client.ack(dlq, m["popReceipt"]), 400, 404, 409)
    client.await_stats(src, size=1, visible=1)
