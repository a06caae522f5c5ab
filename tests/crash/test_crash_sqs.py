"""The SIGKILL crash test through the SQS protocol: boto3 producers
(SendMessage and SendMessageBatch) and consumers (ReceiveMessage with a short
VisibilityTimeout, then DeleteMessage or DeleteMessageBatch) under load, the
server SIGKILLed mid-run N_KILLS times and restarted on the same data
directory (or keyspace), then a drain; DESIGN.md's guarantees checked over
the ledger of what the clients saw, as tests/crash/test_crash.py does for the
native API (whose load shape and helpers this reuses).

SQS differs from the native API in what an ack is. DeleteMessage with a
receipt handle that is no longer the message's latest one succeeds and
deletes nothing (AWS documents this), and a message whose lease ran out may
be received again and its new handle deleted while the old one is in a
consumer's hands. So each successful delete is classified from the ledger:

- current: no receive of the same message other than the one that gave the
  handle could have been served before the delete was answered (none seen
  whose request began before the delete's answer and whose answer came after
  the handle's receive began), and, where a receive whose answer was lost
  (to the kill) had begun in that round before the delete was answered, the
  delete was answered while the handle's lease still certainly held (so that
  unseen receive cannot have taken the message). Such a delete deleted the
  message: no receive that began after the delete's answer may deliver it
  again (guarantee 3);
- stale: a later receive of the message was answered before the delete was
  sent. It must delete nothing (guarantee 4 as SQS has it): the message is
  still owed, and the drain must find it;
- otherwise (or when the delete's answer was lost in a kill) it may or may
  not have applied, and is only counted.

Guarantees 1 and 2: every message whose send got its MessageId and that no
current or possibly-applied delete removed before a kill is delivered after
that restart; at the end every message sent is removed by a delete that is
current or may have applied (a stale one does not count). Message ids and
bodies are stable across restarts (one body in four is 700-1,500 bytes,
which the embedded store keeps out of the message's row). A send whose
answer was lost may or may not be delivered (counted, not failed). One
consumer holds every tenth batch past its lease and deletes it late, so
stale handles (and deletes of expired but still latest handles, which do
delete) happen under load as well.
"""

import collections
import threading
import time
import uuid

import boto3
import botocore.config
import botocore.exceptions

from sluice_client import BACKEND, SluiceServer, await_until
from store_rows import assert_no_live_rows
from test_crash import (ACKS_PER_ROUND, N_CONSUMERS, N_KILLS, N_PRODUCERS, PUTS_PER_ROUND, ROUND_DEADLINE_S, _token,
                        message_body)

VIS = 5          # VisibilityTimeout of the load's receives, seconds
LEASE_MARGIN = 1.0  # a lease is taken as certainly held until VIS - this after its receive was sent
LATE_EVERY = 10  # consumer 0 holds every LATE_EVERY-th received batch past its lease
# ... and deletes it this long after receiving it: by then it was usually
# received again (a lease that ran out is found by the lease index scan
# within a second or two, later on a busy two-core machine; 3 s past the
# lease once left a Cassandra run without a single stale handle).
LATE_BY = VIS + 6
# A round lasts at least this long, so that held batches are deleted late
# (and their handles stale) before its kill.
MIN_ROUND_S = LATE_BY + 3
BATCH = 5        # entries of a SendMessageBatch (producers alternate single sends and batches)
QUEUE = "crashq-sqs"
DRAIN_S = 90     # bound of the drain after the last restart

Delivery = collections.namedtuple("Delivery", "tok mid handle body t_req t_resp rnd")
Delete = collections.namedtuple("Delete", "tok handle t_sent t_ans outcome rnd")  # outcome: ok | unknown


def sqs_client(srv, read_timeout=10):
    """boto3 without retries (total_max_attempts 1: a retried send could
    duplicate a message, and a retried call would hide the kill)."""
    return boto3.session.Session().client(
        "sqs", endpoint_url=srv.base_url, region_name="us-east-1", aws_access_key_id="dev",
        aws_secret_access_key=srv.key,
        config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=read_timeout))


def _server_fault(e):
    """A ClientError that says the server could not do it now (5xx): its
    outcome is unknown to the client, as for a lost answer."""
    return e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500


class SqsLedger:
    """What the clients saw, with monotonic times, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.puts = {}          # token -> (MessageId, round, body)
        self.put_unknown = set()  # token whose send got no answer, a 5xx or a batch entry failed by the server
        self.deliveries = []    # Delivery
        self.lost_receives = []  # (t_req, round) of receives whose answer was lost: they may have leased messages
        self.deletes = []       # Delete
        self.problems = []

    def problem(self, s):
        with self.lock:
            self.problems.append(s)


def _send(sqs, url, ledger, rnd, n):
    """One SendMessage (n == 1) or SendMessageBatch of n messages. Returns
    False on an unexpected answer (recorded as a problem)."""
    bodies = {}
    for _ in range(n):
        tok = f"tok-{uuid.uuid4().hex}"
        bodies[tok] = message_body(tok, rnd)
    toks = list(bodies)
    try:
        if n == 1:
            r = sqs.send_message(QueueUrl=url, MessageBody=bodies[toks[0]])
            ok, unknown = {toks[0]: r["MessageId"]}, []
        else:
            r = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": bodies[t]}
                                                              for i, t in enumerate(toks)])
            ok = {toks[int(e["Id"][1:])]: e["MessageId"] for e in r.get("Successful", [])}
            unknown = []
            for e in r.get("Failed", []):
                if e.get("SenderFault"):
                    ledger.problem(f"SendMessageBatch entry failed by the sender's fault: {e}")
                    return False
                unknown.append(toks[int(e["Id"][1:])])
            if len(ok) + len(unknown) != n:
                ledger.problem(f"SendMessageBatch answered {len(ok)} + {len(unknown)} entries of {n}: {r}")
                return False
    except botocore.exceptions.BotoCoreError:
        ok, unknown = {}, toks
    except botocore.exceptions.ClientError as e:
        if not _server_fault(e):
            ledger.problem(f"send: {e.response.get('Error')}")
            return False
        ok, unknown = {}, toks
    with ledger.lock:
        for t, mid in ok.items():
            ledger.puts[t] = (mid, rnd, bodies[t])
        ledger.put_unknown.update(unknown)
    return True


def _producer(sqs, url, ledger, stop, rnd, k):
    sent = 0
    i = 0
    while not stop.is_set():
        if sent > PUTS_PER_ROUND // N_PRODUCERS:  # keep some load going, without piling up
            stop.wait(0.1)
        i += 1
        n = BATCH if (i + k) % 2 else 1
        if not _send(sqs, url, ledger, rnd, n):
            return
        sent += n


def _delete(sqs, url, ledger, rnd, msgs, batch):
    """Deletes msgs (one DeleteMessageBatch or one DeleteMessage each) and
    records each outcome. Returns False when the server did not answer."""

    def record(m, t_sent, outcome):
        with ledger.lock:
            ledger.deletes.append(Delete(_token(m["Body"]), m["ReceiptHandle"], t_sent, time.monotonic(), outcome,
                                         rnd))

    if batch:
        t_sent = time.monotonic()
        try:
            r = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "ReceiptHandle": m["ReceiptHandle"]}
                                                                for i, m in enumerate(msgs)])
        except botocore.exceptions.BotoCoreError:
            r = None
        except botocore.exceptions.ClientError as e:
            if not _server_fault(e):
                ledger.problem(f"DeleteMessageBatch: {e.response.get('Error')}")
                return False
            r = None
        if r is None:
            for m in msgs:
                record(m, t_sent, "unknown")
            return False
        seen = set()
        for e in r.get("Successful", []):
            seen.add(e["Id"])
            record(msgs[int(e["Id"][1:])], t_sent, "ok")
        for e in r.get("Failed", []):
            seen.add(e["Id"])
            if e.get("SenderFault"):
                ledger.problem(f"DeleteMessageBatch entry failed: {e}")
            record(msgs[int(e["Id"][1:])], t_sent, "unknown")
        if len(seen) != len(msgs):
            ledger.problem(f"DeleteMessageBatch answered {len(seen)} entries of {len(msgs)}: {r}")
        return True
    for m in msgs:
        t_sent = time.monotonic()
        try:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        except botocore.exceptions.BotoCoreError:
            record(m, t_sent, "unknown")
            return False
        except botocore.exceptions.ClientError as e:
            if not _server_fault(e):
                ledger.problem(f"DeleteMessage: {e.response.get('Error')}")
            record(m, t_sent, "unknown")
            return False
        record(m, t_sent, "ok")
    return True


def _receive(sqs, url, ledger, rnd, vis, wait, max_messages=10):
    """One ReceiveMessage; records its deliveries. Returns the messages, or
    None when the server did not answer."""
    t_req = time.monotonic()
    try:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=max_messages, VisibilityTimeout=vis,
                                WaitTimeSeconds=wait)
    except botocore.exceptions.BotoCoreError:
        r = None
    except botocore.exceptions.ClientError as e:
        if not _server_fault(e):
            ledger.problem(f"ReceiveMessage: {e.response.get('Error')}")
        r = None
    if r is None:
        with ledger.lock:
            ledger.lost_receives.append((t_req, rnd))
        return None
    t_resp = time.monotonic()
    msgs = r.get("Messages", [])
    with ledger.lock:
        for m in msgs:
            ledger.deliveries.append(Delivery(_token(m["Body"]), m["MessageId"], m["ReceiptHandle"], m["Body"],
                                              t_req, t_resp, rnd))
    return msgs


def _consumer(sqs, url, ledger, stop, rnd, k):
    late = []  # (due, msgs): batches held past their lease, deleted late
    n = 0
    while not stop.is_set():
        now = time.monotonic()
        while late and late[0][0] <= now:
            _delete(sqs, url, ledger, rnd, late.pop(0)[1], batch=True)
        msgs = _receive(sqs, url, ledger, rnd, VIS, 1)
        if msgs is None:
            stop.wait(0.05)
            continue
        if not msgs:
            continue
        n += 1
        if k == 0 and n % LATE_EVERY == 0:
            late.append((time.monotonic() + LATE_BY, msgs))
            continue
        if not _delete(sqs, url, ledger, rnd, msgs, batch=k % 2 == 1):
            stop.wait(0.05)


def _guarded(fn, ledger):
    """fn, with any exception it raises recorded as a problem (a load
    thread that died would otherwise only thin the load)."""
    def run(*args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported by the round and by _check
            ledger.problem(f"{fn.__name__} raised {e!r}")
    return run


def _count(ledger, rnd):
    with ledger.lock:
        puts = sum(1 for v in ledger.puts.values() if v[1] == rnd)
        deletes = sum(1 for d in ledger.deletes if d.rnd == rnd and d.outcome == "ok")
        return puts, deletes, list(ledger.problems)


def _run_round(srv, url, ledger, rnd):
    """Runs producers and consumers until PUTS_PER_ROUND sends of this round
    got their MessageId, ACKS_PER_ROUND deletes succeeded and MIN_ROUND_S
    passed, then SIGKILLs the server while they still run."""
    stop = threading.Event()
    clients = [sqs_client(srv) for _ in range(N_PRODUCERS + N_CONSUMERS)]
    threads = [threading.Thread(target=_guarded(_producer, ledger), args=(clients[i], url, ledger, stop, rnd, i),
                                daemon=True) for i in range(N_PRODUCERS)]
    threads += [threading.Thread(target=_guarded(_consumer, ledger),
                                 args=(clients[N_PRODUCERS + i], url, ledger, stop, rnd, i), daemon=True)
                for i in range(N_CONSUMERS)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    deadline = t0 + ROUND_DEADLINE_S
    try:
        while True:
            n, acks, problems = _count(ledger, rnd)
            assert not problems, "\n".join(problems[:10])
            if n >= PUTS_PER_ROUND and acks >= ACKS_PER_ROUND and time.monotonic() - t0 >= MIN_ROUND_S:
                break
            assert time.monotonic() < deadline, (f"round {rnd}: only {n} sends got a MessageId and {acks} deletes "
                                                 f"succeeded within {ROUND_DEADLINE_S} s")
            time.sleep(0.02)
        srv.kill()  # mid-run: producers and consumers are still sending
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
    assert not any(t.is_alive() for t in threads), "load threads hung"


def _counts(sqs, url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"]),
            int(a["ApproximateNumberOfMessagesDelayed"]))


def _drain(srv, url, ledger, rnd, t_restart):
    """Receives (lease 30 s) and deletes until the queue stays empty after
    every lease outstanding at the kill has run out, and GetQueueAttributes
    counts nothing. A lease taken in the last second or so before a kill
    may not have reached the store (the engine defers lease entries,
    src/queue/lease.c): its message comes back through the repair worker,
    after the queue's finalize timeout (15 s for a queue made through SQS),
    not after its VisibilityTimeout; hence DRAIN_S."""
    sqs = sqs_client(srv)
    deadline = time.monotonic() + DRAIN_S
    quiet_since = None
    counts = None
    got = 0
    t0 = time.monotonic()
    last_got = None
    try:
        while True:
            assert time.monotonic() < deadline, (
                f"the queue did not drain within {DRAIN_S} s of the restart: {got} messages received while "
                f"draining, the last {last_got} s after the drain began; "
                f"receives empty since {None if quiet_since is None else round(time.monotonic() - quiet_since, 1)} "
                f"s; counts (visible, in flight, delayed) {counts}")
            msgs = _receive(sqs, url, ledger, rnd, 30, 1)
            assert msgs is not None, "the restarted server stopped answering while draining"
            now = time.monotonic()
            if msgs:
                got += len(msgs)
                last_got = round(now - t0, 1)
                quiet_since = None
                assert _delete(sqs, url, ledger, rnd, msgs, batch=True), "a delete failed while draining"
                continue
            quiet_since = quiet_since or now
            if now - t_restart < VIS + 2 or now - quiet_since < 3:  # leases outstanding at the kill ran out
                continue
            counts = _counts(sqs, url)
            if counts == (0, 0, 0):
                return got, last_got
    finally:
        sqs.close()


def _classify(ledger):
    """Returns {category: [Delete]} for current, stale, maybe (see the
    module's docstring), and the problems of the ledger itself."""
    by_tok = collections.defaultdict(list)
    by_handle = {}
    for d in ledger.deliveries:
        by_tok[d.tok].append(d)
        by_handle[(d.tok, d.handle)] = d
    lost_rounds = collections.defaultdict(list)
    for t_req, rnd in ledger.lost_receives:
        lost_rounds[rnd].append(t_req)
    out = {"current": [], "stale": [], "maybe": []}
    orphans = []
    for a in ledger.deletes:
        d = by_handle.get((a.tok, a.handle))
        if d is None:
            orphans.append(a)
            continue
        if a.outcome != "ok":
            out["maybe"].append(a)
            continue
        others = [e for e in by_tok[a.tok] if e.handle != a.handle]
        if any(e.t_req > d.t_resp and e.t_resp < a.t_sent for e in others):
            out["stale"].append(a)
            continue
        overlapping = any(e.t_req < a.t_ans and e.t_resp > d.t_req for e in others)
        in_lease = a.t_ans < d.t_req + VIS - LEASE_MARGIN
        unseen = any(t < a.t_ans for t in lost_rounds[a.rnd])
        out["current" if not overlapping and (in_lease or not unseen) else "maybe"].append(a)
    return out, by_tok, orphans


def _check(ledger, kills):
    """kills: the rounds that ended with a kill. Returns the classification's
    counts."""
    with ledger.lock:
        problems = list(ledger.problems)
        puts = dict(ledger.puts)
        unknown = set(ledger.put_unknown)
        cls, by_tok, orphans = _classify(ledger)
        deliveries = list(ledger.deliveries)
    assert not problems, "\n".join(problems[:10])
    assert not orphans, f"{len(orphans)} deletes of handles never received (a bug of the test): {orphans[:3]}"

    # Ids and bodies are stable; every delivered message was one that was sent.
    strangers = sorted({d.tok for d in deliveries if d.tok not in puts and d.tok not in unknown})
    assert not strangers, f"{len(strangers)} delivered messages were never sent, e.g. {strangers[:3]}"
    bad = [(d.tok, puts[d.tok][0], d.mid, d.rnd) for d in deliveries
           if d.tok in puts and (d.mid != puts[d.tok][0] or d.body != puts[d.tok][2])]
    assert not bad, f"{len(bad)} deliveries changed MessageId or body across restarts, e.g. {bad[:3]}"

    # Guarantee 3: no receive that began after a current delete was
    # answered delivers that message.
    redelivered = [(a.tok, a.rnd, round(e.t_req - a.t_ans, 3), e.rnd)
                   for a in cls["current"] for e in by_tok[a.tok] if e.t_req > a.t_ans]
    assert not redelivered, (f"{len(redelivered)} deliveries of messages after a delete with their current handle "
                             f"succeeded, e.g. (token, delete's round, s after its answer, round): {redelivered[:3]}")

    # Guarantees 1 and 2: every sent message not removed before a kill is
    # delivered after that restart. Answers are attributed by round: one
    # read after the kill was still sent by the server before it died.
    removed_by = collections.defaultdict(lambda: 1 << 30)  # token -> first round of a delete that may have applied
    for a in cls["current"] + cls["maybe"]:
        removed_by[a.tok] = min(removed_by[a.tok], a.rnd)
    for k in kills:
        owed = {tok for tok, (_, r, _) in puts.items() if r <= k and removed_by[tok] > k}
        after = {d.tok for d in deliveries if d.rnd > k}
        lost = owed - after
        detail = [(tok, puts[tok][:2], [(round(e.t_req, 2), e.rnd) for e in by_tok[tok]]) for tok in sorted(lost)[:3]]
        assert not lost, (f"{len(lost)} of {len(owed)} messages that got a MessageId and were not deleted before "
                          f"kill {k} were never delivered after the restart, e.g. (token, (id, round), "
                          f"[(t_receive, round)]): {detail}")

    # In the end each sent message was removed by a delete that was current
    # or may have applied; a stale delete removes nothing, so a message whose
    # only deletes were stale must have been delivered and deleted again.
    never = sorted(set(puts) - set(removed_by))
    detail = [(tok, [(a.t_sent, a.outcome) for a in cls["stale"] if a.tok == tok]) for tok in never[:3]]
    assert not never, (f"{len(never)} messages that got a MessageId were never removed by a current delete, e.g. "
                       f"(token, [its stale deletes]): {detail}")
    return {k: len(v) for k, v in cls.items()}


def test_sigkill_under_sqs_load_loses_nothing_and_redelivers_no_delete(tmp_path, record_property):
    srv = SluiceServer(tmp_path / "data", name="crash-sqs")
    print(f"backend {BACKEND}" + (f", keyspace {srv.keyspace}" if BACKEND == "cassandra" else ""))
    srv.start()
    ledger = SqsLedger()
    kills = []
    try:
        sqs = sqs_client(srv)
        sqs.create_queue(QueueName=QUEUE)
        sqs.close()
        t_restart = None
        for rnd in range(1, N_KILLS + 1):
            sqs = sqs_client(srv)
            url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]  # the port is new after each restart
            sqs.close()
            t0 = time.monotonic()
            _run_round(srv, url, ledger, rnd)
            t1 = time.monotonic()
            srv.start()
            n_put, n_del, _ = _count(ledger, rnd)
            print(f"round {rnd}: load {t1 - t0:.1f} s ({n_put} sends, {n_del} deletes), "
                  f"restart {time.monotonic() - t1:.1f} s")
            t_restart = time.monotonic()
            kills.append(rnd)
        sqs = sqs_client(srv)
        url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
        t0 = time.monotonic()
        drained, last_got = _drain(srv, url, ledger, N_KILLS + 1, t_restart)
        t_drain = time.monotonic() - t0
        classes = _check(ledger, kills)
        with ledger.lock:
            unknown_back = len(ledger.put_unknown & {d.tok for d in ledger.deliveries})
            figures = (f"{len(ledger.puts)} sends with a MessageId, {len(ledger.put_unknown)} unknown "
                       f"({unknown_back} of them delivered); "
                       f"{len(ledger.deliveries)} deliveries ({drained} in the drain of {t_drain:.1f} s, the last "
                       f"after {last_got} s), "
                       f"{len(ledger.lost_receives)} receives unanswered; deletes: {classes['current']} current, "
                       f"{classes['stale']} stale, {classes['maybe']} unknown or unclear")
        print(figures)
        record_property("crash_sqs", figures)
        assert classes["stale"], "no delete was stale: the late deletes did not exercise stale handles"

        # Deletes are durable too: one more power cut with an idle, empty
        # queue, and nothing comes back.
        sqs.close()
        srv.kill()
        srv.start()
        sqs = sqs_client(srv)
        url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
        t_restart = time.monotonic()
        seen = []
        while time.monotonic() - t_restart < 3:
            seen += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=10,
                                        WaitTimeSeconds=1).get("Messages", [])
        assert not seen, f"{len(seen)} deleted messages came back after a restart, e.g. {[m['Body'] for m in seen[:3]]}"
        await_until(lambda: _counts(sqs, url) == (0, 0, 0), timeout=15, interval=0.2,
                    desc="GetQueueAttributes to count nothing after the last restart")
        sqs.close()
        # Nor in the buckets GetQueueAttributes does not read (store_rows.py).
        assert_no_live_rows(srv, QUEUE)
    finally:
        srv.close()
