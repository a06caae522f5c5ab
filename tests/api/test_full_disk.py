"""The embedded store on a full disk, and on a read-only data directory
(issue 17, item 2).

Each test mounts a small tmpfs of its own (root is needed to mount; where
the test cannot, it is skipped and says why) and unmounts it after.

Full disk: a filler file takes every free byte while the server runs. Then
puts answer 507 InsufficientStorage with a JSON error and Retry-After (a
put that still fits in space SQLite already holds may succeed, and then
counts like any other), never a 5xx of another kind; reads keep working;
the server logs the condition once, not once per request; when the filler
is removed the same process takes puts again; and after a restart every
message that got a 201 is delivered once, with its body, except those whose
ack got a 204.

Read-only: a data directory on a read-only filesystem, new or holding a
database, makes the server exit at once with a non-zero status and a
message that names the directory and the reason."""

import hashlib
import os
import subprocess

import pytest

from sluice_client import BINARY, SluiceServer, assert_error, assert_status, await_until, describe

pytestmark = pytest.mark.backend("sqlite", reason="the embedded store's own disk")

FS_SIZE = "6m"
BIG = 200 * 1024  # bytes of a message that needs new space


def _mount(path, opts):
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root is needed): {r.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    _mount(mnt, f"size={FS_SIZE},mode=0755")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path):
    """Writes path until the filesystem is full; returns the bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    n += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return n


def _body(tag, size):
    return (tag + ":" + hashlib.sha256(tag.encode()).hexdigest() * (size // 64 + 1))[:size]


def test_full_disk_refuses_writes_with_507_and_recovers_without_loss(small_fs):
    srv = SluiceServer(small_fs / "data", name="full-disk")
    srv.start()
    try:
        c = srv.client()
        q = c.new_queue("full")
        owed = {}
        for i in range(40):
            body = _body(f"owed-{i}", 300)
            owed[c.put_ok(q, body)] = body
        leased = c.receive_list(q, 6, 10)
        assert len(leased) == 6

        filled = _fill(small_fs / "filler")
        assert filled > 0

        # Acks need little space and may fit where SQLite has room already:
        # a 204 counts (that message must never come back), a 507 is fine.
        acked = set()
        for m in leased[:3]:
            r = c.ack(q, m["popReceipt"])
            if r.status_code == 204:
                acked.add(m["messageId"])
            else:
                assert r.status_code == 507, f"ack on a full disk: {describe(r)}"

        refused = 0
        for i in range(30):
            body = _body(f"big-{i}", BIG)
            r = c.put(q, body)
            if r.status_code == 201:
                owed[r.json()["messageId"]] = body
                continue
            err = assert_error(r, 507)
            assert err["code"] == "InsufficientStorage", describe(r)
            assert r.headers.get("Retry-After", "").isdigit(), describe(r)
            refused += 1
            if refused >= 3:
                break
        assert refused >= 3, "the disk is full, yet every big put got a 201"
        r = c.put_batch(q, [_body(f"batch-{i}", BIG // 4) for i in range(8)])
        if r.status_code == 201:
            for i, mid in enumerate(r.json()["messageIds"]):
                owed[mid] = _body(f"batch-{i}", BIG // 4)
        else:
            assert assert_error(r, 507)["code"] == "InsufficientStorage"
        r = c.create_queue("while-full-" + q[-6:])
        assert r.status_code in (200, 201) or assert_error(r, 507)["code"] == "InsufficientStorage", describe(r)

        # Reads need no space.
        assert_status(c.get_queue(q), 200)
        assert_status(c.stats(q), 200)
        assert_status(c.peek(q, 5), 200)
        assert_status(c.health(), 200)
        assert srv.alive(), srv.log_tail()
        # The log says so once, not once per request (the server's output is
        # read by another thread: wait for the line).
        await_until(lambda: "store: the disk of" in srv.log_tail(400), timeout=10, desc="the full disk logged")
        log = srv.log_tail(400)
        assert log.count("store: the disk of") == 1, f"the full disk should be logged once:\n{log[-3000:]}"

        # Space comes back: the same process takes writes again.
        os.unlink(small_fs / "filler")
        body = _body("after", 300)

        def put_after():
            r = c.put(q, body)
            assert r.status_code in (201, 507), describe(r)
            return r if r.status_code == 201 else None

        r = await_until(put_after, timeout=30, interval=0.2, desc="a put to succeed once space was freed")
        owed[r.json()["messageId"]] = body
        await_until(lambda: "has room again" in srv.log_tail(50), timeout=10, desc="the recovery logged")
        c.close()

        # Nothing stored was lost or corrupted: restart on the same data and
        # drain.
        srv.stop()
        srv.start()
        c = srv.client()
        got = {}

        def drained():
            for m in c.receive_list(q, 32, 60, 1):
                assert m["messageId"] not in got, f"{m['messageId']} delivered twice"
                got[m["messageId"]] = m["message"]
            return (set(owed) - acked) <= set(got)

        await_until(drained, timeout=90, interval=0, desc="every message that got a 201 to be delivered")
        for mid, b in owed.items():
            if mid in got:
                assert got[mid] == b, f"message {mid} came back with another body"
        assert not (acked & set(got)), "a message whose ack got a 204 came back"
        c.close()
    finally:
        srv.close()


def _start_fails(data_dir):
    p = subprocess.run([BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", str(data_dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def test_read_only_data_directory_is_a_clear_error_at_start(tmp_path):
    ro = tmp_path / "ro"
    _mount(ro, "size=1m,mode=0755")
    try:
        # A directory that holds a database, made read-only afterwards.
        srv = SluiceServer(ro / "data", name="before-ro")
        srv.start()
        c = srv.client()
        c.new_queue("kept")
        c.close()
        srv.stop()
        r = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for d in (ro / "data", ro / "new"):
            rc, out = _start_fails(d)
            assert rc not in (0, None), out
            assert str(ro) in out, out
            assert "Read-only file system" in out, out
            assert "listening" not in out, out
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
