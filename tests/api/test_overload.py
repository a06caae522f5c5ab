"""What clients see when the store fails or the server is saturated.

API.md: a 503 (with Retry-After) means the store did not answer and the
request may be retried, and nothing was half-done; a 429 (with Retry-After)
means load shedding; a 5xx never answers bad input and a 500 never happens.
The embedded store's fault hook is switched on in a running server with
SLUICE_TEST_FAULTS (test-only), so these tests run on the embedded backend.
"""

import threading

import pytest

from sluice_client import BACKEND, SluiceServer, await_until, unique_name

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="store fault injection is an embedded-store hook")


class TunedServer(SluiceServer):
    """A server started with extra environment settings."""

    def __init__(self, data_dir, extra_env, name="tuned"):
        super().__init__(data_dir, name=name)
        self.extra_env = dict(extra_env)

    def _backend_env(self):
        env = super()._backend_env()
        env.update(self.extra_env)
        return env


@pytest.fixture
def start(tmp_path):
    """start(env, name) -> a started TunedServer; every server it started is
    stopped when the test ends, passed or failed."""
    made = []

    def _start(env, name):
        srv = TunedServer(tmp_path / f"data-{len(made)}", env, name=name)
        made.append(srv)
        return srv.start()

    yield _start
    for srv in made:
        srv.close()


def test_store_failure_is_503_and_changes_nothing(start):
    srv = start({}, "healthy")
    c = srv.client()
    q = c.new_queue()
    c.put_ok(q, "before")
    c.close()
    srv.stop()

    # Every write fails: writes answer 503 with Retry-After, reads still work.
    srv.extra_env = {"SLUICE_TEST_FAULTS": "seed=7,fail=1000000"}
    srv.start()
    c = srv.client()
    for resp in (
        c.put(q, "during"),
        c.request("POST", c.qpath(q, "/messages/receive"), json={"maxMessages": 1}),
        c.request("POST", c.qbase(), json={"queueName": unique_name()}),
        c.request("POST", c.qpath(q, "/purge")),
    ):
        assert resp.status_code == 503, resp.text
        assert resp.headers.get("Retry-After"), resp.headers
        assert resp.json()["error"]["code"] == "ServiceUnavailable"
    assert c.get_queue(q).status_code == 200
    # Bad input is still a 4xx, never a 5xx, even with the store down.
    assert c.request("POST", c.qpath(q, "/messages/receive"), json={"maxMessages": 99}).status_code == 400
    c.close()
    srv.stop()

    # Healthy again: the message from before is there, exactly once; the
    # failed put, purge and create left nothing behind.
    srv.extra_env = {}
    srv.start()
    c = srv.client()
    got = c.drain(q, invisibility=30)
    assert [m["message"] for m in got] == ["before"]
    assert [x["queueName"] for x in c.list_queues().json()] == [q]
    c.close()
    srv.close()


def test_random_store_faults_never_500_and_lose_nothing(start):
    """With 15% of store writes failing or ending with an unknown outcome,
    every answer is a success, a 409 or a 503, never a 500. Afterwards, on a
    healthy store, every put that got a 201 is delivered unless it was
    acked, and no message whose ack got a 204 comes back."""
    srv = start({}, "faults")
    c = srv.client()
    q = c.new_queue(bucketSize=5, repairWorkerPollSeconds=1, repairWorkerBucketFinalizeTimeSeconds=1)
    c.close()
    srv.stop()
    srv.extra_env = {"SLUICE_TEST_FAULTS": "seed=11,fail=50000,unknown_applied=50000,unknown_dropped=50000"}
    srv.start()
    c = srv.client()
    put_ok, acked, statuses = set(), set(), {}
    for i in range(150):
        body = f"m{i}"
        r = c.put(q, body)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code == 201:
            put_ok.add(body)
        if i % 3 == 2:
            r = c.request("POST", c.qpath(q, "/messages/receive"), json={"maxMessages": 3, "invisibilitySeconds": 2})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code != 200:
                continue
            for m in r.json()["messages"]:
                assert m["message"] not in acked, "an acked message came back"
                a = c.ack(q, m["popReceipt"])
                statuses[a.status_code] = statuses.get(a.status_code, 0) + 1
                if a.status_code == 204:
                    acked.add(m["message"])
    assert set(statuses) <= {200, 201, 204, 409, 503}, statuses
    assert statuses.get(503, 0) > 0, "the fault hook injected nothing"
    c.close()
    srv.stop()

    srv.extra_env = {}
    srv.start()
    c = srv.client()
    seen = set()

    def drained():
        r = c.request("POST", c.qpath(q, "/messages/receive"), json={"maxMessages": 32, "invisibilitySeconds": 30})
        assert r.status_code == 200, r.text
        for m in r.json()["messages"]:
            assert m["message"] not in acked, "an acked message came back after the restart"
            seen.add(m["message"])
            assert c.ack(q, m["popReceipt"]).status_code == 204
        return not r.json()["messages"] and (put_ok - acked) <= seen

    await_until(drained, timeout=60, interval=0.2, desc="every durable, unacked message delivered")
    c.close()
    srv.close()


def test_saturated_store_sheds_load_with_429(start):
    """With room for one queued write, concurrent puts beyond it get 429 with
    Retry-After, and a shed put leaves no message behind. The messages are
    large so that each commit takes long enough for puts to pile up."""
    srv = start({"SLUICE_MAX_PENDING_WRITES": "1"}, "shed")
    c = srv.client()
    q = c.new_queue()
    results = []
    lock = threading.Lock()

    def producer(n):
        pc = srv.client()
        for i in range(10):
            r = pc.put(q, f"{n}-{i}-" + "x" * 200_000)
            assert r.status_code in (201, 429), r.text
            if r.status_code == 429:
                assert r.headers.get("Retry-After")
                assert r.json()["error"]["code"] == "ServerBusy"
            with lock:
                results.append((r.status_code, f"{n}-{i}-" + "x" * 200_000))
        pc.close()

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shed = [b for s, b in results if s == 429]
    ok = {b for s, b in results if s == 201}
    assert shed, "16 concurrent producers never saturated a 1-write queue"
    c.close()
    srv.stop()
    srv.extra_env = {}
    srv.start()
    c = srv.client()
    got = {m["message"] for m in c.drain(q, invisibility=30)}
    assert got == ok
    c.close()
    srv.close()


def test_too_many_waiting_long_polls_is_429(start):
    """With room for one waiting long poll, of two that overlap exactly one
    is shed with 429; once the waiter is answered, long polls work again."""
    srv = start({"SLUICE_MAX_WAITERS": "1"}, "waiters")
    c = srv.client()
    q = c.new_queue()
    resps = []
    lock = threading.Lock()

    def wait_long():
        wc = srv.client()
        r = wc.request("POST", wc.qpath(q, "/messages/receive"), json={"waitSeconds": 3}, timeout=30)
        with lock:
            resps.append(r)
        wc.close()

    threads = [threading.Thread(target=wait_long) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in resps) == [200, 429], [r.text for r in resps]
    shed = next(r for r in resps if r.status_code == 429)
    assert shed.headers.get("Retry-After")
    assert shed.json()["error"]["code"] == "ServerBusy"

    got = {}

    def wait_again():
        got["resp"] = c.request("POST", c.qpath(q, "/messages/receive"), json={"waitSeconds": 20}, timeout=30)

    t = threading.Thread(target=wait_again)
    t.start()
    p = srv.client()
    p.put_ok(q, "wake")
    p.close()
    t.join(30)
    assert got["resp"].status_code == 200
    assert [m["message"] for m in got["resp"].json()["messages"]] == ["wake"]
    c.close()
    srv.close()
