"""The message rows a server left in its store, read past the server.

After a crash test has drained its queue, and the queue's statistics count
nothing, the store must hold no live message of that queue: no READY,
WAITING or MOVING row in any bucket. The statistics read only the buckets
from the repair pointer on, so a live row in a bucket that the repair
worker finalized (a "stranded" row) escapes them, and the server never
hands it out again: a lost message that no client-side ledger may notice
(its token may have been delivered before). This reads the store directly,
the embedded store's SQLite file or the Cassandra keyspace (with
tests/cassandra/cql_mini.py), and describes each live row it finds.
"""

import os
import sqlite3
import sys
import time

from sluice_client import BACKEND, REPO

sys.path.insert(0, os.path.join(REPO, "tests", "cassandra"))
import cql_mini  # noqa: E402 (found through the line above)

COLS = "qkey, bucket, id, state, put_ms, put_vis, version, dcount, visible_ms, dest"
LIVE = {0: "READY", 1: "WAITING", 3: "MOVING"}  # src/queue/queue_int.h
MARKERS = {10: "sealed", 11: "finalized"}


def _rows(srv):
    if BACKEND == "cassandra":
        msgs = cql_mini.query(srv.cassandra_port, f'SELECT {COLS} FROM "{srv.keyspace}".messages', "QUORUM",
                              timeout=60.0)
        ptrs = cql_mini.query(srv.cassandra_port, f'SELECT qkey, name, value FROM "{srv.keyspace}".pointers',
                              "QUORUM", timeout=60.0)
        return msgs, ptrs
    db = sqlite3.connect(f"file:{os.path.join(srv.data_dir, 'sluice.db')}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        now = int(time.time() * 1000)
        live = '"_exp" = 0 OR "_exp" > ?'  # rows past their TTL are gone
        msgs = [dict(r) for r in db.execute(f"SELECT {COLS} FROM messages WHERE {live}", (now,))]
        ptrs = [dict(r) for r in db.execute(f"SELECT qkey, name, value FROM pointers WHERE {live}", (now,))]
        return msgs, ptrs
    finally:
        db.close()


def live_rows(srv, queue, account="dev"):
    """Descriptions of the live message rows of every incarnation of queue,
    each saying whether its bucket is behind the repair pointer. Read with
    the server stopped (or idle): rows being written show up too."""
    msgs, ptrs = _rows(srv)
    prefix = f"{account}/{queue}/"
    repair = {p["qkey"]: p["value"] for p in ptrs if p["name"] == "repair"}
    marker = {(m["qkey"], m["bucket"]): m["state"] for m in msgs if m["id"] < 0}
    out = []
    for m in msgs:
        if m["id"] < 0 or not m["qkey"].startswith(prefix):
            continue
        state = m["state"]
        if state is None:  # no compare-and-set wrote it yet: as msg_norm reads it
            state = 1 if (m["put_vis"] or 0) > (m["put_ms"] or 0) else 0
        if state not in LIVE:
            continue
        passed = m["bucket"] < repair.get(m["qkey"], 0)
        out.append(f"{LIVE[state]} id {m['id']} in bucket {m['bucket']} of {m['qkey']} "
                   f"({'behind the repair pointer ' + str(repair.get(m['qkey'])) if passed else 'in the live range'}, "
                   f"bucket {MARKERS.get(marker.get((m['qkey'], m['bucket'])), 'open')}; version {m['version']}, "
                   f"dcount {m['dcount']}, visible_ms {m['visible_ms']}, dest {m['dest']})")
    return out


def assert_no_live_rows(srv, queue):
    """Stops srv and asserts that its store holds no live row of queue (a
    drained queue), naming the first ten it finds."""
    srv.stop()
    left = live_rows(srv, queue)
    assert not left, f"{len(left)} live message rows left in the store of a drained queue:\n" + "\n".join(left[:10])
