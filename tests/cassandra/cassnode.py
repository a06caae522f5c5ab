"""Test-side helpers for the Cassandra suites: a Cassandra node of a test's
own (started, stopped, frozen and thawed through scripts/cassandra.sh and
its PID file), and reads of the rows Sluice keeps in Cassandra.

Every node binds 127.0.0.1 and is stopped by the PID its run dir records.
"""

import os
import signal
import subprocess
import time

import cql_mini

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "cassandra.sh")


class CassandraNode:
    """One throwaway node in run_dir. start() on a run dir that held a
    stopped node brings that node back on its data and its port."""

    def __init__(self, run_dir, port=None, heap=None):
        self.run_dir = str(run_dir)
        self.port = port
        self.heap = heap or os.environ.get("SLUICE_TEST_CASSANDRA_HEAP") or os.environ.get("CASSANDRA_HEAP", "1g")
        self.output = ""

    def _script(self, *args, timeout=300):
        env = dict(os.environ)
        env.pop("CASSANDRA_PORT", None)  # the port is --port or the run dir's own
        env["CASSANDRA_RUN_DIR"] = self.run_dir
        env["CASSANDRA_HEAP"] = self.heap
        p = subprocess.run([SCRIPT, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        self.output += out
        return p.returncode, out

    def start(self):
        if self.port is None:
            rc, out = self._script("free-port", timeout=30)
            assert rc == 0, f"cassandra.sh free-port failed: {out}"
            self.port = int(out.split()[-1])
        t0 = time.monotonic()
        rc, out = self._script("start", "--port", str(self.port))
        assert rc == 0, f"Cassandra did not start on port {self.port}:\n{out[-3000:]}"
        self.started_in = time.monotonic() - t0
        return self

    def stop(self):
        """Stops the node by its PID (SIGTERM, then SIGKILL after 60 s)."""
        self.thaw()  # a frozen JVM cannot act on SIGTERM
        rc, out = self._script("stop")
        assert rc == 0, f"cassandra.sh stop failed: {out}"

    def pid(self):
        return run_dir_pid(self.run_dir)

    def running(self):
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def freeze(self):
        """SIGSTOP: the node hangs; its sockets stay open and accept."""
        pid = self.pid()
        assert pid, "no Cassandra PID to freeze"
        os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if getattr(self, "frozen", False):
            pid = self.pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
            self.frozen = False

    def log_tail(self, n=40):
        return run_dir_log_tail(self.run_dir, n)


def run_dir_pid(run_dir):
    """The PID cassandra.sh recorded in a node's run dir, or None."""
    try:
        with open(os.path.join(run_dir, "cassandra.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def run_dir_log_tail(run_dir, n=40):
    """The last n lines of a node's system.log."""
    try:
        with open(os.path.join(run_dir, "logs", "system.log"), errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no system.log)"


def repair_lease(port, keyspace, account, queue):
    """The repair lease row of a queue as a dict (owner, nonce, ttl and the
    write time of owner), or None when there is none. A queue's key is
    "account/name/version"; the keyspace of one test holds one version."""
    rows = cql_mini.query(port, f'SELECT qkey, owner, nonce, ttl(owner) AS ttl, writetime(nonce) AS wt '
                                f'FROM "{keyspace}".repair_lease')
    prefix = f"{account}/{queue}/"
    mine = [r for r in rows if isinstance(r.get("qkey"), str) and r["qkey"].startswith(prefix)]
    return mine[-1] if mine else None


def sub_lease(port, keyspace, account, name):
    """The lease row of an event subscription as a dict (owner, nonce, ttl),
    or None when there is none."""
    rows = cql_mini.query(port, f'SELECT skey, owner, nonce, ttl(owner) AS ttl FROM "{keyspace}".event_sub_lease')
    mine = [r for r in rows if r.get("skey") == f"{account}/{name}"]
    return mine[0] if mine else None
