"""Jepsen-style history checks of the queue under concurrent load, on both
backends (tests/history/history.py records and checks the histories).

Each test runs a workload against a fresh server and queue, recording every
put, receive and ack with its invoke and complete times, drains the queue,
and checks the history: no acknowledged put lost, no delivery after a
successful ack, no messageId for two bodies, no unknown or altered message,
no status API.md does not allow, no false empty longer than
FALSE_EMPTY_BOUND_S, and exact statistics once the queue is idle.

FALSE_EMPTY_BOUND_S = 5 s: an empty answer is a violation when some message
had been visible (its put answered 201 and nobody could have taken it) for
more than 5 s and stayed visible through the whole receive. 5 s is the lag
API.md tolerates for statistics ("may lag by a few seconds") and the
repairWorkerPollSeconds/FinalizeTimeSeconds of the fast queues the tests
create (1 s each) several times over; a correct server answers a receive
from what is visible at once, so anything near the bound is already a
finding. The longest staleness of any empty (within the bound or not) is
recorded too.

Durations come from the environment (the defaults keep the module under
about 90 s per backend on a 2-core machine):
  SLUICE_HISTORY_PHASE_S  seconds of each closed-loop phase (8: the
                          server that stranded messages behind id gaps at
                          64 connections, on Cassandra, failed 4 runs of 9
                          with 8 s phases, and passed with 3 s ones)
  SLUICE_HISTORY_PC_S     seconds of the producers/consumers run (5)
  SLUICE_HISTORY_DRAIN_S  deadline of the drain (60; leases of
                          indeterminate receives last 60 s)

The figures (lifecycles/s, empties, stalls per phase, TCP connections the
workers opened, the drain's outcome) are recorded with record_property,
which scripts/test.sh prints. A failed check leaves the whole history as
JSON lines (History.dump) in the test's tmp_path and names the file.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "history"))

from history import History, await_idle_stats, check, closed_loop, drain, producers_consumers  # noqa: E402

PHASE_CONNS = (1, 4, 16, 64, 16, 64)
PHASE_S = float(os.environ.get("SLUICE_HISTORY_PHASE_S", "8"))
PC_S = float(os.environ.get("SLUICE_HISTORY_PC_S", "5"))
DRAIN_S = float(os.environ.get("SLUICE_HISTORY_DRAIN_S", "60"))
FALSE_EMPTY_BOUND_S = 5.0
LEASE_S = 60  # the workloads' invisibility: no lease expires while they run
STATS_TIMEOUT_S = 30.0


def _verify(srv, q, h, d, runs, record_property, label, tmp_path):
    """Checks the history of a finished workload plus drain; records the
    figures; asserts every property with one message that lists every
    failure (and the figures, to read them when it fails). A failed check
    leaves the history in tmp_path (History.dump) and says where."""
    res = check(h, visible_bound_s=FALSE_EMPTY_BOUND_S, queue=q)
    for p in res.phases:
        record_property(f"{label}_{p.name}", f"{p.lifecycles_per_s:.0f} lifecycles/s, {p.ops_per_s:.0f} ops/s, "
                        f"{p.empties} empties, {p.indeterminate} indeterminate, "
                        f"longest stall {p.longest_stall_s:.2f} s")
    # Each worker keeps one connection while keep-alive holds; more means
    # the server closed some (see PEERS.md), and the load was not the one
    # intended.
    record_property(f"{label}_connections", ", ".join(f"{r.connects} for {r.threads} workers" for r in runs))
    record_property(f"{label}_drain_result", f"{'done' if d.done else 'INCOMPLETE'} after {d.waited_s:.1f} s, "
                    f"{d.receives} receives, {d.acked} acked, {len(d.unsettled)} unsettled")
    record_property(f"{label}_check", ", ".join(f"{k} {n}" for k, n in res.counts().items())
                    + f"; longest false empty {res.longest_false_empty_s:.2f} s, longest empty staleness "
                    f"{res.max_empty_staleness_s:.2f} s, redeliveries {res.redeliveries}")
    stats = await_idle_stats(srv.base_url, srv.key, q, timeout_s=STATS_TIMEOUT_S)
    record_property(f"{label}_idle_stats", f"{stats.stats} after {stats.waited_s:.1f} s")

    failures = []
    for r in runs:
        if not r.ok:
            failures.append(f"workload: {r.stuck} threads stuck, {len(r.crashes)} crashed\n" + "".join(r.crashes[:2]))
    if not d.done:
        failures.append(f"drain incomplete after {d.waited_s:.1f} s: {len(d.unsettled)} acknowledged puts not "
                        f"delivered and acked, e.g. {sorted(d.unsettled)[:5]}")
    for kind, n in res.counts().items():
        if n:
            failures.append(f"{n} {kind}")
    if not stats.ok:
        failures.append(f"statistics not exact when idle after {stats.waited_s:.1f} s: {stats.stats}")
    if failures:
        failures.append(f"history: {h.dump(tmp_path / f'{label}-history.jsonl')}")
    assert not failures, "\n".join(failures) + "\n" + res.summary()
    return res


def test_closed_loop_phases_keep_every_message(server_factory, record_property, tmp_path):
    """Closed-loop workers (put -> receive until a message -> ack) at 1, 4,
    16, 64, 16 and 64 connections on one queue, then drain and check."""
    srv = server_factory("history")
    c = srv.client()
    q = c.new_queue("hist-cl")
    c.close()
    h = History()
    runs = [closed_loop(srv.base_url, srv.key, q, n, PHASE_S, h, invisibility_s=LEASE_S, phase=f"C{n}_{i}")
            for i, n in enumerate(PHASE_CONNS)]
    d = drain(srv.base_url, srv.key, q, h, deadline_s=DRAIN_S)
    res = _verify(srv, q, h, d, runs, record_property, "closed_loop", tmp_path)
    assert res.acks_ok > 0 and all(p.acks_ok > 0 for p in res.phases if p.name != "drain"), res.summary()


def test_producers_and_consumers_keep_every_message(server_factory, record_property, tmp_path):
    """64 producers (at most 500 puts not yet acked) and 64 consumers (GET
    next and POST receive of up to 10) on one queue, then drain and check."""
    srv = server_factory("history-pc")
    c = srv.client()
    q = c.new_queue("hist-pc")
    c.close()
    h = History()
    run = producers_consumers(srv.base_url, srv.key, q, 64, 64, PC_S, h, max_unacked=500, invisibility_s=LEASE_S,
                              phase="P64xC64")
    d = drain(srv.base_url, srv.key, q, h, deadline_s=DRAIN_S)
    res = _verify(srv, q, h, d, [run], record_property, "prod_cons", tmp_path)
    assert res.acks_ok > 0, res.summary()
