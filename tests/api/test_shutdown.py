"""Ctrl-C (SIGINT) and SIGTERM stop the server cleanly: in-flight requests
finish, their commits reach the disk first, waiting long polls are answered,
and the process exits 0."""

import signal
import threading
import time

import pytest
import requests

from sluice_client import await_until


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_under_load_exits_cleanly_and_keeps_every_201(server_factory, sig):
    srv = server_factory("shutdown")
    c = srv.client()
    q = c.new_queue()
    acked_201 = []
    lock = threading.Lock()
    stop = threading.Event()

    def producer(n):
        pc = srv.client()
        i = 0
        while not stop.is_set():
            body = f"{n}-{i}"
            i += 1
            try:
                r = pc.put(q, body)
            except requests.RequestException:
                break  # the server went away mid-request: no 201, no promise
            if r.status_code == 201:
                with lock:
                    acked_201.append(body)
            elif r.status_code != 503:
                raise AssertionError(f"unexpected {r.status_code}: {r.text}")
        pc.close()

    waiter = {}

    def long_poll():
        wc = srv.client()
        other = wc.new_queue()
        try:
            waiter["resp"] = wc.request(
                "POST", wc.qpath(other, "/messages/receive"), json={"waitSeconds": 20}, timeout=30
            )
        except requests.RequestException as e:
            waiter["error"] = e
        wc.close()

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    lp = threading.Thread(target=long_poll)
    lp.start()
    for t in threads:
        t.start()
    await_until(lambda: len(acked_201) >= 100, timeout=30, desc="100 puts acknowledged")
    t0 = time.monotonic()
    srv.proc.send_signal(sig)
    rc = srv.proc.wait(timeout=20)
    stopped_in = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(10)
    lp.join(10)
    assert rc == 0, srv.log_tail()
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
    # The parked long poll was answered (empty), not cut off.
    assert "resp" in waiter, waiter.get("error")
    assert waiter["resp"].status_code == 200
    assert waiter["resp"].json() == {"messages": []}
    srv._finish()

    srv.start()
    c = srv.client()
    got = {m["message"] for m in c.drain(q, invisibility=30, timeout=60)}
    missing = set(acked_201) - got
    assert not missing, f"{len(missing)} acknowledged puts lost, e.g. {sorted(missing)[:5]}"
    c.close()
