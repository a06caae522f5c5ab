"""Queue statistics converge to exact values when the queue is idle."""

import time

from sluice_client import assert_status, await_depth, describe, store_reads

FIELDS = ("size", "visible", "inFlight", "delayed", "deadLettered", "oldestMessageAgeSeconds")


def test_statistics_shape_on_empty_queue(client):
    q = client.new_queue("stempty")
    r = assert_status(client.stats(q), 200)
    s = r.json()
    for k in FIELDS:
        assert k in s, f"statistics lack {k}: {describe(r)}"
        assert isinstance(s[k], int) and not isinstance(s[k], bool), f"{k} is not an integer: {describe(r)}"
    client.await_stats(q, size=0, visible=0, inFlight=0, delayed=0, deadLettered=0, oldestMessageAgeSeconds=0)


def test_statistics_converge_to_exact_counts(client):
    q = client.new_queue("stcount")
    assert_status(client.put_batch(q, [f"v{i}" for i in range(5)]), 201)
    client.put_ok(q, "d1", initial_invisibility=300)
    client.put_ok(q, "d2", initial_invisibility=300)
    leased = client.receive_list(q, 2, 300)
    assert len(leased) >= 1
    n_leased = len(leased)
    assert all(m["message"].startswith("v") for m in leased)
    client.await_stats(q, size=7, visible=5 - n_leased, inFlight=n_leased, delayed=2)

    # Ack one leased message; return the other (if any) to the queue.
    assert_status(client.ack(q, leased[0]["popReceipt"]), 204)
    for m in leased[1:]:
        assert_status(client.update(q, m["popReceipt"], new_invisibility=0), 200)
    client.await_stats(q, size=6, visible=4, inFlight=0, delayed=2)

    # Drain the visible ones: the delayed remain.
    got = client.drain(q)
    assert len(got) == 4
    s = client.await_stats(q, size=2, visible=0, inFlight=0, delayed=2, deadLettered=0)
    assert s["oldestMessageAgeSeconds"] >= 0


def test_oldest_message_age_grows(client):
    q = client.new_queue("stage")
    client.put_ok(q, "old")
    t = time.monotonic()
    while time.monotonic() - t < 2.2:
        time.sleep(0.2)
    s = client.await_stats(q, size=1, visible=1)
    assert 1 <= s["oldestMessageAgeSeconds"] <= 120, s


def test_statistics_after_expired_lease(client):
    q = client.new_queue("stexp")
    client.put_ok(q, "x")
    assert_status(client.get_next(q, invisibility=1), 200)
    # The lease runs out with nobody receiving: the message counts as
    # visible again (counts may lag but converge).
    client.await_stats(q, size=1, visible=1, inFlight=0, delayed=0, timeout=15)


def test_delayed_becomes_visible_in_statistics(client):
    q = client.new_queue("stdelay")
    client.put_ok(q, "x", initial_invisibility=1)
    client.await_stats(q, size=1, visible=1, delayed=0, inFlight=0, timeout=15)


def test_statistics_read_none_of_the_messages(server, client):
    """However deep the queue, GET /{q}/statistics answers from memory: the
    node's own count of what it did, recounted from the store only after
    something its count cannot follow (ledger.c; on Cassandra also what the
    other nodes' tallies say, census.c). A request that read the queue
    would read each of its 80 buckets."""
    q = client.new_queue("stdeep", bucketSize=5)
    for i in range(40):
        assert_status(client.put_batch(q, [f"m{i}-{k}" for k in range(10)]), 201)
    await_depth(server, client, q, visible=400, inFlight=0, delayed=0)  # the node counted the queue
    before = store_reads(server)
    for _ in range(20):
        s = client.stats_json(q)
        assert (s["size"], s["visible"]) == (400, 400), s
    read = store_reads(server) - before
    assert read < 80, f"20 statistics requests read {read} times from the messages table (one read of the queue: 80)"
    # The figures still follow what happens.
    got = client.receive_list(q, 10, 300)
    assert len(got) >= 2, got
    assert_status(client.ack(q, got[0]["popReceipt"]), 204)
    s = client.stats_json(q)
    n = len(got)
    assert (s["size"], s["visible"], s["inFlight"]) == (399, 400 - n, n - 1), s
