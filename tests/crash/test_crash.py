"""Crash tests: SIGKILL the server under load and check DESIGN.md's
guarantees 1-4 after each restart on the same data directory:

- every put that got 201 and was not acked (204) before the kill is
  delivered after the restart (durability, at-least-once);
- no message whose ack got 204 is ever delivered again;
- message ids are stable across restarts;
- a message comes back with the body it was put with. One body in four is
  700-1,500 bytes, which the embedded store keeps out of the message's row
  (a table of values, written once), so recovery covers both places.

Backend-aware through SluiceServer: with SLUICE_TEST_BACKEND=cassandra the
server's state lives in a keyspace of its own on the test node, and each
restart after a kill reconnects to that same keyspace (as it reopens the same
data directory on the embedded store). What is killed is Sluice, never
Cassandra: a put that got 201 was written at the configured consistency,
which is guarantee 1 on Cassandra (DESIGN.md). Cassandra's own outages are
tests/cassandra/test_faults.py.
"""

import threading
import time
import uuid

import requests

from sluice_client import BACKEND, SluiceServer, assert_status, await_depth, await_until, describe
from store_rows import assert_no_live_rows

N_PRODUCERS = 4
N_CONSUMERS = 2
PUTS_PER_ROUND = 300
ACKS_PER_ROUND = 50
CONSUMER_INVIS = 3   # seconds; leases outstanding at a kill run out this fast
N_KILLS = 2
ROUND_DEADLINE_S = 60


class Ledger:
    """What the clients saw, with monotonic times, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.put_ok = {}        # token -> (messageId, t, round)
        self.put_unknown = set()  # token whose put got no answer (killed mid-request)
        self.acked = {}         # token -> (round, time the 204 arrived)
        self.ack_unknown = set()  # token whose ack got no answer: it may have applied
        self.deliveries = []    # (token, messageId, t_request_started, round)
        self.bodies = {}        # token -> the body put (whether or not the put was answered)
        self.problems = []

    def problem(self, s):
        with self.lock:
            self.problems.append(s)


def _token(body):
    return body.split(" ", 1)[0]


def message_body(tok, rnd):
    """The message of a token: about 90 bytes, or 700-1,500 bytes for one in
    four (a length drawn from the token), every byte of it checked when it
    comes back. test_crash_sqs.py sends the same bodies."""
    h = int(tok[-8:], 16)
    pad = 50 if h % 4 else 650 + h % 800
    return f"{tok} round {rnd} " + "".join("pqrstuvw"[(h >> (i % 24)) & 7] for i in range(pad))


def _producer(c, q, ledger, stop, rnd):
    n = 0
    while not stop.is_set():
        n += 1
        if n > PUTS_PER_ROUND // N_PRODUCERS:  # keep some load going, without piling up
            stop.wait(0.02)
        tok = f"tok-{uuid.uuid4().hex}"
        body = message_body(tok, rnd)
        with ledger.lock:
            ledger.bodies[tok] = body
        try:
            r = c.put(q, body)
        except requests.RequestException:
            with ledger.lock:
                ledger.put_unknown.add(tok)
            continue
        if r.status_code == 201:
            with ledger.lock:
                ledger.put_ok[tok] = (r.json()["messageId"], time.monotonic(), rnd)
        elif r.status_code == 503:
            # Allowed by API.md (retryable); whether it was written is
            # not known to the client, so the message may or may not come.
            with ledger.lock:
                ledger.put_unknown.add(tok)
        else:
            ledger.problem(f"put: {describe(r)}")
            return


def _consume_once(c, q, ledger, rnd, invis, wait, batch_ack, max_messages=10):
    """One receive and the acks of what it got (one batch ack, or one ack
    per message). Returns the number of messages received, or None when
    the server did not answer."""
    t_req = time.monotonic()
    try:
        r = c.receive(q, max_messages, invis, wait)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        if r.status_code != 503:
            ledger.problem(f"receive: {describe(r)}")
        return None
    msgs = r.json()["messages"]
    with ledger.lock:
        for m in msgs:
            tok = _token(m["message"])
            ledger.deliveries.append((tok, m["messageId"], t_req, rnd))
            if m["message"] != ledger.bodies.get(tok):
                ledger.problems.append(f"{m['messageId']} ({tok}) came back with another body: "
                                       f"{len(m['message'])} bytes, {m['message'][:60]!r}...")
    if not msgs:
        return 0

    def record(m, status):
        tok = _token(m["message"])
        with ledger.lock:
            if status == 204:
                if tok in ledger.acked:
                    ledger.problems.append(f"second successful ack of {m['messageId']} ({tok})")
                ledger.acked.setdefault(tok, (rnd, time.monotonic()))
            elif status in (None, 503):  # no answer: the ack may have applied
                ledger.ack_unknown.add(tok)
            elif status != 409:
                ledger.problems.append(f"ack of {m['messageId']}: status {status}")

    if batch_ack:
        try:
            a = c.ack_batch(q, [m["popReceipt"] for m in msgs])
        except requests.RequestException:
            a = None
        if a is None or a.status_code == 503:
            for m in msgs:
                record(m, None)
            return None
        if a.status_code != 200:
            ledger.problem(f"batch ack: {describe(a)}")
            return None
        for m, res in zip(msgs, a.json()["results"]):
            record(m, res["status"])
        return len(msgs)
    for i, m in enumerate(msgs):
        try:
            a = c.ack(q, m["popReceipt"])
        except requests.RequestException:
            record(m, None)
            return None
        record(m, a.status_code)
    return len(msgs)


def _consumer(c, q, ledger, stop, rnd, k):
    while not stop.is_set():
        if _consume_once(c, q, ledger, rnd, CONSUMER_INVIS, 1, batch_ack=k % 2 == 1) is None:
            time.sleep(0.05)


def _run_round(srv, q, ledger, rnd, kill):
    """Runs producers and consumers until PUTS_PER_ROUND puts of this round
    got 201, then SIGKILLs the server (kill=True) while they still run."""
    stop = threading.Event()
    clients = [srv.client() for _ in range(N_PRODUCERS + N_CONSUMERS)]
    threads = [threading.Thread(target=_producer, args=(clients[i], q, ledger, stop, rnd), daemon=True)
               for i in range(N_PRODUCERS)]
    threads += [threading.Thread(target=_consumer, args=(clients[N_PRODUCERS + i], q, ledger, stop, rnd, i), daemon=True)
                for i in range(N_CONSUMERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + ROUND_DEADLINE_S
    try:
        while True:
            with ledger.lock:
                n = sum(1 for v in ledger.put_ok.values() if v[2] == rnd)
                acks = sum(1 for v in ledger.acked.values() if v[0] == rnd)
                problems = list(ledger.problems)
            assert not problems, "\n".join(problems[:10])
            if n >= PUTS_PER_ROUND and acks >= ACKS_PER_ROUND:
                break
            assert time.monotonic() < deadline, (f"round {rnd}: only {n} puts got 201 and {acks} acks got 204 "
                                                 f"within {ROUND_DEADLINE_S} s")
            time.sleep(0.02)
        if kill:
            srv.kill()  # mid-run: producers and consumers are still sending
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
    assert not any(t.is_alive() for t in threads), "load threads hung"


def _drain(srv, q, ledger, rnd, t_restart):
    """Receives and acks until the queue stays empty after every lease that
    was outstanding at the kill has run out, and statistics say size 0."""
    c = srv.client()
    deadline = time.monotonic() + 60
    quiet_since = None
    st = None
    got = 0
    t0 = time.monotonic()
    last_got = None
    try:
        while True:
            assert time.monotonic() < deadline, (
                f"the queue did not drain within 60 s of the restart: {got} messages received while draining, "
                f"the last {last_got} s after the drain began; receives empty since "
                f"{None if quiet_since is None else round(time.monotonic() - quiet_since, 1)} s; statistics {st}")
            n = _consume_once(c, q, ledger, rnd, 10, 1, batch_ack=True, max_messages=32)
            assert n is not None, "the restarted server stopped answering while draining"
            now = time.monotonic()
            if n:
                got += n
                last_got = round(now - t0, 1)
                quiet_since = None
                continue
            quiet_since = quiet_since or now
            if now - t_restart < CONSUMER_INVIS + 2 or now - quiet_since < 3:
                continue
            st = c.stats_json(q)
            if st["size"] == 0:
                return
    finally:
        c.close()


def _check(ledger, kills):
    """kills: the rounds that ended with a kill."""
    with ledger.lock:
        put_ok = dict(ledger.put_ok)
        acked = dict(ledger.acked)
        deliveries = list(ledger.deliveries)
        unknown = set(ledger.put_unknown)
        ack_unknown = set(ledger.ack_unknown)
        problems = list(ledger.problems)
    assert not problems, "\n".join(problems[:10])

    # Ids are stable and every delivered message was one that was put.
    bad_ids, strangers = [], []
    for tok, mid, _, _ in deliveries:
        if tok in put_ok:
            if put_ok[tok][0] != mid:
                bad_ids.append((tok, put_ok[tok][0], mid))
        elif tok not in unknown:
            strangers.append(tok)
    assert not strangers, f"{len(strangers)} delivered messages were never put, e.g. {strangers[:3]}"
    assert not bad_ids, f"message ids changed across restarts: {bad_ids[:3]}"

    # No delivery of a message whose ack got 204 before that receive began.
    redelivered = [(tok, t) for tok, _, t, _ in deliveries if tok in acked and t > acked[tok][1]]
    assert not redelivered, (f"{len(redelivered)} messages delivered again after their ack got 204, "
                             f"e.g. {redelivered[:3]}")

    # Every 201 not acked before a kill is delivered after that restart.
    # Answers are attributed by round, not by time: a 201 or 204 read from
    # the socket after the kill was still sent by the server before it died.
    for rnd in kills:
        owed = {tok for tok, (_, _, r) in put_ok.items() if r <= rnd and not (tok in acked and acked[tok][0] <= rnd)}
        after = {tok for tok, _, _, r in deliveries if r > rnd}
        # An ack whose answer was lost in the kill may have applied.
        lost = owed - after - ack_unknown
        detail = [(tok, put_ok[tok], [d[2:] for d in deliveries if d[0] == tok]) for tok in sorted(lost)[:3]]
        assert not lost, (f"{len(lost)} of {len(owed)} messages that got 201 and were not acked before kill "
                          f"{rnd} were never delivered after the restart, e.g. (token, (id, t_put, round), "
                          f"[(t_receive, round)]): {detail}")

    # In the end, every 201 was acked (or its ack's answer was lost in a kill).
    never = set(put_ok) - set(acked) - ack_unknown
    assert not never, f"{len(never)} messages that got 201 were never acked, e.g. {sorted(never)[:3]}"


def test_sigkill_under_load_loses_nothing_and_redelivers_no_ack(tmp_path):
    srv = SluiceServer(tmp_path / "data", name="crash")
    print(f"backend {BACKEND}" + (f", keyspace {srv.keyspace}" if BACKEND == "cassandra" else ""))
    srv.start()
    ledger = Ledger()
    kills = []
    try:
        c = srv.client()
        r = c.create_queue("crashq", repairWorkerPollSeconds=1, repairWorkerBucketFinalizeTimeSeconds=1)
        assert_status(r, 201)
        c.close()
        q = "crashq"
        for rnd in range(1, N_KILLS + 1):
            t0 = time.monotonic()
            _run_round(srv, q, ledger, rnd, kill=True)
            t1 = time.monotonic()
            srv.start()
            with ledger.lock:
                n_put = sum(1 for v in ledger.put_ok.values() if v[2] == rnd)
                n_ack = sum(1 for v in ledger.acked.values() if v[0] == rnd)
            print(f"round {rnd}: load {t1 - t0:.1f} s ({n_put} puts, {n_ack} acks), "
                  f"restart {time.monotonic() - t1:.1f} s")
            t_restart = time.monotonic()
            kills.append(rnd)
            c = srv.client()
            r = c.get_queue(q)
            c.close()
            assert r.status_code == 200, f"queue gone after kill {rnd}: {describe(r)}"
        t0 = time.monotonic()
        _drain(srv, q, ledger, N_KILLS + 1, t_restart)
        print(f"drain {time.monotonic() - t0:.1f} s")
        _check(ledger, kills)

        # Acks are durable too: one more power cut with an idle, empty
        # queue, and nothing comes back.
        srv.kill()
        srv.start()
        c = srv.client()
        t_restart = time.monotonic()
        seen = []
        while time.monotonic() - t_restart < 3:
            t_req = time.monotonic()
            msgs = c.receive_list(q, 10, 10, 1)
            seen += [(_token(m["message"]), m["messageId"], t_req, 99) for m in msgs]
        assert not seen, f"{len(seen)} acked messages came back after a restart, e.g. {seen[:3]}"
        c.await_stats(q, size=0, visible=0, inFlight=0, delayed=0)
        # The metrics of the restarted node: the depth is exact, the
        # counters count what it did since it started (the receives above).
        await_depth(srv, c, q, visible=0, inFlight=0, delayed=0, oldestMessageAgeSeconds=0)
        m = requests.get(srv.admin_url + "/metrics", headers={"Authorization": "Bearer " + srv.admin_token},
                         timeout=10, verify=False).text
        assert f'sluice_queue_puts_total{{account="dev",queue="{q}"}} 0' in m, m
        assert f'sluice_queue_acks_total{{account="dev",queue="{q}"}} 0' in m, m
        c.close()
        # Nothing the statistics cannot see either: no live row of the
        # queue is left anywhere in the store, not even in a bucket the
        # repair worker finalized (store_rows.py).
        assert_no_live_rows(srv, q)
    finally:
        srv.close()


def test_leases_receipts_and_delays_survive_sigkill(tmp_path):
    """A consumer holding a receipt across a server crash can still ack it;
    a leased or delayed message stays invisible until its time."""
    srv = SluiceServer(tmp_path / "data", name="lease")
    srv.start()
    try:
        c = srv.client()
        q = c.new_queue("lease")
        ids = [c.put_ok(q, f"m{i}") for i in range(3)]
        leased = [assert_status(c.get_next(q, invisibility=120), 200).json() for _ in range(2)]
        delayed_id = c.put_ok(q, "delayed", initial_invisibility=120)
        c.close()
        srv.kill()
        srv.start()
        c = srv.client()
        # The restarted node counts the queue again from the store: the
        # metrics show the leases and the delay of before the crash.
        await_depth(srv, c, q, visible=1, inFlight=2, delayed=1)
        # Only the one message that was neither leased nor delayed is visible.
        free = [i for i in ids if i not in {m["messageId"] for m in leased}]
        got = []
        await_until(lambda: got.extend(c.receive_list(q, 10, 120)) or got, timeout=15, desc="the free message")
        assert [m["messageId"] for m in got] == free, f"after a restart got {[m['message'] for m in got]}"
        r = c.receive(q, 10, 120, 1)
        assert r.status_code == 200 and r.json()["messages"] == [], f"leased or delayed delivered: {describe(r)}"
        # The receipts handed out before the crash still work.
        assert_status(c.ack(q, leased[0]["popReceipt"]), 204)
        u = assert_status(c.update(q, leased[1]["popReceipt"], new_invisibility=0), 200).json()
        back = await_until(lambda: c.receive_list(q, 10, 120), timeout=5, desc="the returned message")
        assert [m["messageId"] for m in back] == [leased[1]["messageId"]]
        assert back[0]["deliveryCount"] == 2
        assert u["popReceipt"]
        c.await_stats(q, size=3, inFlight=2, delayed=1, visible=0)
        assert delayed_id
        c.close()
    finally:
        srv.close()


def test_dead_lettering_under_sigkill_loses_and_duplicates_nothing(tmp_path):
    """A queue with a DLQ (maxDeliveryCount 2), consumers that ack some
    messages and abandon others (lease 1 s), and SIGKILLs. Afterwards every
    message that got 201 ends up acked from exactly one place: the source
    queue or the DLQ; none is in the DLQ twice, none acked in the source
    shows up in the DLQ."""
    srv = SluiceServer(tmp_path / "data", name="dlqcrash")
    srv.start()
    c = srv.client()
    dlq = c.new_queue("dlq")
    src = c.new_queue("src", maxDeliveryCount=2, dlqName=dlq)
    c.close()
    put_ok = {}
    put_unknown = set()
    acked_src = {}
    ack_unknown = set()
    lock = threading.Lock()
    try:
        for rnd in range(2):
            stop = threading.Event()
            clients = [srv.client() for _ in range(3)]

            def producer(cl):
                while not stop.is_set():
                    tok = f"tok-{uuid.uuid4().hex}"
                    try:
                        r = cl.put(src, tok)
                    except requests.RequestException:
                        with lock:
                            put_unknown.add(tok)
                        continue
                    with lock:
                        (put_ok.__setitem__(tok, r.json()["messageId"]) if r.status_code == 201
                         else put_unknown.add(tok))
                    stop.wait(0.002)

            def consumer(cl):
                n = 0
                while not stop.is_set():
                    try:
                        r = cl.receive(src, 10, 1, 1)
                    except requests.RequestException:
                        stop.wait(0.05)
                        continue
                    if r.status_code != 200:
                        continue
                    for m in r.json()["messages"]:
                        n += 1
                        if n % 3 == 0:
                            continue  # abandon: it comes back, and after 2 deliveries goes to the DLQ
                        try:
                            a = cl.ack(src, m["popReceipt"])
                        except requests.RequestException:
                            with lock:
                                ack_unknown.add(m["message"])
                            continue
                        with lock:
                            if a.status_code == 204:
                                acked_src[m["message"]] = True
                            elif a.status_code != 409:
                                ack_unknown.add(m["message"])

            ts = [threading.Thread(target=producer, args=(clients[0],), daemon=True),
                  threading.Thread(target=consumer, args=(clients[1],), daemon=True),
                  threading.Thread(target=consumer, args=(clients[2],), daemon=True)]
            for t in ts:
                t.start()
            t0 = time.monotonic()
            with lock:
                target = len(put_ok) + 200
            await_until(lambda: len(put_ok) >= target, timeout=60, desc="200 puts in this round")
            print(f"dlq round {rnd}: 200 puts in {time.monotonic() - t0:.1f} s")
            time.sleep(1.5)  # let abandoned leases run out so messages move to the DLQ under load
            srv.kill()
            stop.set()
            for t in ts:
                t.join(30)
            for cl in clients:
                cl.close()
            srv.start()

        # Drain both queues: the source until every lease ran out, then the DLQ.
        t0 = time.monotonic()
        c = srv.client()
        from_src, from_dlq = {}, {}
        deadline = time.monotonic() + 90
        quiet = None
        s1 = s2 = None
        while True:
            assert time.monotonic() < deadline, (f"queues did not drain in 90 s: statistics of the source {s1}, of "
                                                 f"the DLQ {s2}; {len(from_src)} from the source and "
                                                 f"{len(from_dlq)} from the DLQ so far\n" + srv.log_tail(60))
            got = 0
            for q, seen in ((src, from_src), (dlq, from_dlq)):
                msgs = c.receive_list(q, 32, 30, 0)
                got += len(msgs)
                for m in msgs:
                    seen[m["message"]] = seen.get(m["message"], 0) + 1
                    # In the drain nothing is abandoned: each ack must work.
                    assert_status(c.ack(q, m["popReceipt"]), 204)
            if got:
                quiet = None
                continue
            quiet = quiet or time.monotonic()
            if time.monotonic() - quiet < 3:
                time.sleep(0.2)
                continue
            s1, s2 = c.stats_json(src), c.stats_json(dlq)
            # Both empty, and every 201 accounted for: a move that the kill
            # cut is completed by the source's repair worker only once its
            # bucket's finalize timeout has passed.
            with lock:
                missing = set(put_ok) - set(acked_src) - set(from_src) - set(from_dlq) - ack_unknown
            if s1["size"] == 0 and s2["size"] == 0 and not missing:
                break
            if time.monotonic() + 1 >= deadline:
                lost = sorted(missing)[:5]
                raise AssertionError(f"{len(missing)} of {len(put_ok)} messages that got 201 are gone after 90 s, "
                                     f"e.g. {[(t, put_ok[t]) for t in lost]}; statistics of the source {s1}, "
                                     f"of the DLQ {s2}\n" + srv.log_tail(60))
            time.sleep(0.2)
        c.close()
        print(f"dlq drain {time.monotonic() - t0:.1f} s: {len(from_src)} from the source, {len(from_dlq)} from the DLQ")

        dup = {t: n for t, n in from_dlq.items() if n > 1}
        assert not dup, f"{len(dup)} messages delivered from the DLQ more than once while draining: {list(dup)[:3]}"
        dup = {t: n for t, n in from_src.items() if n > 1}
        assert not dup, f"{len(dup)} messages delivered twice from the source while draining: {list(dup)[:3]}"
        both = set(from_dlq) & (set(acked_src) | set(from_src))
        assert not both, f"{len(both)} messages were acked in the source and also in the DLQ, e.g. {sorted(both)[:3]}"
        strangers = set(from_dlq) - set(put_ok) - put_unknown
        assert not strangers, f"the DLQ holds messages never put: {sorted(strangers)[:3]}"
        accounted = set(acked_src) | set(from_src) | set(from_dlq) | ack_unknown
        lost = set(put_ok) - accounted
        assert not lost, f"{len(lost)} of {len(put_ok)} messages that got 201 are gone, e.g. {sorted(lost)[:3]}"
        assert from_dlq, "nothing was dead-lettered: the test did not exercise the DLQ"
    finally:
        srv.close()
