"""Parallel workers: many consumers on one queue, one of which never acks.
Every message is acked exactly once, none is lost."""

import collections
import threading
import time

from sluice_client import assert_status, describe

N_MESSAGES = 1000
N_ACKERS = 10
DEADLINE_S = 120


def test_parallel_consumers_ack_every_message_exactly_once(client):
    q = client.new_queue("parallel")
    bodies = {}
    for start in range(0, N_MESSAGES, 100):
        batch = [f"job-{i}" for i in range(start, start + 100)]
        r = assert_status(client.put_batch(q, batch), 201)
        ids = r.json()["messageIds"]
        assert len(ids) == 100, describe(r)
        bodies.update(zip(ids, batch))
    assert len(bodies) == N_MESSAGES, "message ids are not unique"

    lock = threading.Lock()
    acked = collections.Counter()  # messageId -> successful acks
    problems = []
    stale = [0]
    stop = threading.Event()
    deadline = time.monotonic() + DEADLINE_S

    def done():
        with lock:
            return len(acked) >= N_MESSAGES

    def acker(k):
        c = client.clone()
        use_batch = k % 2 == 0
        try:
            while not stop.is_set() and not done() and time.monotonic() < deadline:
                r = c.receive(q, 10, 5, 1)
                if r.status_code != 200:
                    with lock:
                        problems.append(f"acker {k} receive: {describe(r)}")
                    return
                msgs = r.json()["messages"]
                for m in msgs:
                    if bodies.get(m["messageId"]) != m["message"]:
                        with lock:
                            problems.append(f"unknown or altered message {m['messageId']}: {m['message']!r}")
                if not msgs:
                    continue
                if use_batch:
                    ar = c.ack_batch(q, [m["popReceipt"] for m in msgs])
                    if ar.status_code != 200:
                        with lock:
                            problems.append(f"acker {k} batch ack: {describe(ar)}")
                        return
                    results = ar.json()["results"]
                    statuses = [x["status"] for x in results]
                else:
                    statuses = []
                    for m in msgs:
                        ar = c.ack(q, m["popReceipt"])
                        statuses.append(ar.status_code)
                for m, st in zip(msgs, statuses):
                    with lock:
                        if st == 204:
                            acked[m["messageId"]] += 1
                        elif st == 409:
                            stale[0] += 1
                        else:
                            problems.append(f"acker {k} ack of {m['messageId']}: status {st}")
        except Exception as e:
            with lock:
                problems.append(f"acker {k}: {e!r}")
        finally:
            c.close()

    def hoarder():
        """Receives and never acks: its messages must come back to others."""
        c = client.clone()
        try:
            while not stop.is_set() and not done() and time.monotonic() < deadline:
                r = c.receive(q, 10, 2, 1)
                if r.status_code != 200:
                    with lock:
                        problems.append(f"hoarder receive: {describe(r)}")
                    return
        except Exception as e:
            with lock:
                problems.append(f"hoarder: {e!r}")
        finally:
            c.close()

    threads = [threading.Thread(target=acker, args=(k,), daemon=True) for k in range(N_ACKERS)]
    threads.append(threading.Thread(target=hoarder, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + 10))
    stop.set()
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} consumer threads still running at the deadline"

    assert not problems, "\n".join(problems[:20])
    twice = {m: n for m, n in acked.items() if n > 1}
    assert not twice, f"{len(twice)} messages acked successfully more than once, e.g. {list(twice.items())[:5]}"
    missing = set(bodies) - set(acked)
    assert not missing, f"{len(missing)} of {N_MESSAGES} messages never acked within {DEADLINE_S} s (stale acks: {stale[0]})"
    assert set(acked) <= set(bodies)
    client.await_stats(q, timeout=30, size=0, visible=0, inFlight=0, delayed=0)
    r = client.receive(q, 32, 30, 0)
    assert r.status_code == 200 and r.json()["messages"] == [], describe(r)


def _race(n, fn):
    """Runs fn(i) in n threads released at once; returns the results."""
    barrier = threading.Barrier(n)
    out = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            out[i] = fn(i)
        except Exception as e:  # reported through out
            out[i] = e

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def test_concurrent_acks_of_one_receipt_succeed_once(client):
    q = client.new_queue("ackrace")
    for _ in range(5):
        client.put_ok(q, "x")
        m = client.get_next(q, invisibility=60).json()
        clients = [client.clone() for _ in range(8)]
        res = _race(8, lambda i: clients[i].ack(q, m["popReceipt"]).status_code)
        for c in clients:
            c.close()
        assert sorted(res) == [204] + [409] * 7, f"concurrent acks of one receipt: {res}"


def test_concurrent_ack_and_update_of_one_receipt(client):
    """Either the ack or the update wins, never both: if the update won, its
    new receipt is the only valid one and the message is not acked."""
    q = client.new_queue("ackupd")
    for _ in range(5):
        client.put_ok(q, "x")
        m = client.get_next(q, invisibility=60).json()
        c1, c2 = client.clone(), client.clone()
        res = _race(2, lambda i: (c1.ack(q, m["popReceipt"]) if i == 0
                                  else c2.update(q, m["popReceipt"], new_invisibility=60)))
        c1.close()
        c2.close()
        a, u = res
        assert sorted([a.status_code, u.status_code]) in ([200, 409], [204, 409]), (a.status_code, u.status_code)
        if u.status_code == 200:
            assert_status(client.ack(q, u.json()["popReceipt"]), 204)
        else:
            assert client.get_next(q).status_code == 204
        client.await_stats(q, size=0)


def test_concurrent_receives_of_one_message_deliver_it_once(client):
    q = client.new_queue("recvrace")
    for _ in range(5):
        mid = client.put_ok(q, "only one")
        clients = [client.clone() for _ in range(8)]
        res = _race(8, lambda i: clients[i].get_next(q, invisibility=60))
        for c in clients:
            c.close()
        codes = sorted(r.status_code for r in res)
        assert codes == [200] + [204] * 7, f"8 concurrent receives of one message: {codes}"
        m = next(r.json() for r in res if r.status_code == 200)
        assert m["messageId"] == mid
        assert_status(client.ack(q, m["popReceipt"]), 204)
