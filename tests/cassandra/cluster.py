"""A throwaway Cassandra cluster of n nodes (3 by default) on one machine,
for tests that need replication: node i (1-based) listens on 127.0.0.i
(Linux answers all of 127/8 without an alias), every node on the same
native port and storage port (one free pair, checked on every address), each
with its own run dir under base_dir, all started, stopped, killed, frozen and
thawed through scripts/cassandra.sh and the PID file of that run dir.

    c = Cluster(tmp_path)            # heap: SLUICE_TEST_CLUSTER_HEAP, else 640m
    try:
        c.start()                    # node 1, then 2..n together; waits healthy
        n2 = c.node(2)
        n2.kill(); ...; n2.start(); c.wait_healthy()
    finally:
        c.stop_all()                 # by PID, always

Start-up: node 1 is the only seed; it starts first and alone. Nodes 2..n
then start together with auto_bootstrap: false (the cluster is empty, there
is nothing to stream, and a bootstrapping node would have to wait for the
others to finish theirs). Tokens are explicit and balanced: the ring is cut
into 16 x n equal arcs and node i takes every n-th boundary, so every node
owns exactly 1/n of the ring (which matters for keyspaces with RF < n, such
as the RF 1 that `sluice schema --create-keyspace` makes by default) and no
two nodes can get the same token. The token allocator
(allocate_tokens_for_local_replication_factor) is not used: nodes that join
at the same time see the same ring and it hands them the same tokens.

Health is judged over CQL only (no JMX, no nodetool): on every node,
system.peers must list all the others, schema versions must agree, and a
write at consistency ALL coordinated by that node to a table of RF n
(sluice_cluster_health.probe) must succeed, which needs that node's failure
detector to hold every replica up and every replica to answer.
"""

import os
import signal
import socket
import subprocess
import time

import cql_mini
from cassnode import run_dir_log_tail, run_dir_pid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "cassandra.sh")

HEALTH_KS = "sluice_cluster_health"
TOKENS_PER_NODE = 16
START_TIMEOUT_S = int(os.environ.get("SLUICE_TEST_CLUSTER_START_TIMEOUT", "300"))


def balanced_tokens(n, per_node=TOKENS_PER_NODE):
    """n lists of per_node Murmur3 tokens: the ring cut into n x per_node
    equal arcs, node i taking every n-th boundary from i. Half a step off
    -2**63, which is the partitioner's minimum token and not assignable."""
    total = n * per_node
    step = 2 ** 64 // total
    ring = [-2 ** 63 + step // 2 + k * step for k in range(total)]
    return [ring[i::n] for i in range(n)]


def _inet(b):
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


def _proc_alive(pid):
    """True while pid runs; a zombie (killed, not yet reaped) is gone."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] != "Z"
    except OSError:
        return False
    return True


class ClusterNode:
    """One node of a Cluster. index is 1-based; address is 127.0.0.index
    unless the cluster was given other addresses."""

    def __init__(self, cluster, index, address, run_dir, tokens):
        self.cluster = cluster
        self.index = index
        self.address = address
        self.run_dir = str(run_dir)
        self.tokens = tokens
        self.output = ""  # everything cassandra.sh printed for this node
        self.frozen = False
        self.started_in = None  # seconds the last start took until CQL answered
        self._pids = set()  # every PID this node ever had, for stop_all

    def __repr__(self):
        return f"<ClusterNode {self.index} {self.address}:{self.cluster.port} pid={self.pid}>"

    @property
    def port(self):
        return self.cluster.port

    # --- process control ---------------------------------------------------

    def _env(self):
        env = dict(os.environ)
        env.pop("CASSANDRA_PORT", None)  # the port is --port
        env["CASSANDRA_RUN_DIR"] = self.run_dir
        env["CASSANDRA_HEAP"] = self.cluster.heap
        env.setdefault("CASSANDRA_START_TIMEOUT", str(START_TIMEOUT_S))
        return env

    def _start_args(self):
        c = self.cluster
        args = [SCRIPT, "start", "--run-dir", self.run_dir, "--port", str(c.port), "--address", self.address,
                "--heap", c.heap, "--seeds", f"{c.seed}:{c.port + 1000}",
                "--initial-token", ",".join(str(t) for t in self.tokens)]
        if self.index != 1:
            args.append("--no-bootstrap")
        return args

    def _launch(self):
        os.makedirs(self.run_dir, exist_ok=True)
        self._t0 = time.monotonic()
        return subprocess.Popen(self._start_args(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self._env())

    def _finish(self, proc):
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT_S + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        out = out.decode("utf-8", "replace")
        self.output += out
        if self.pid:
            self._pids.add(self.pid)
        if proc.returncode != 0:
            raise AssertionError(f"node {self.index} ({self.address}:{self.port}) did not start:\n{out[-3000:]}")
        self.started_in = time.monotonic() - self._t0
        return self

    def start(self):
        """Starts the node (again: on its data, its address and port) and
        returns once it answers CQL. A restarted node is not yet a healthy
        member: call Cluster.wait_healthy() after this."""
        self.frozen = False
        return self._finish(self._launch())

    @property
    def pid(self):
        return run_dir_pid(self.run_dir)

    def running(self):
        pid = self.pid
        return bool(pid) and _proc_alive(pid)

    def _wait_gone(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while _proc_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _forget_pid(self):
        try:
            os.unlink(os.path.join(self.run_dir, "cassandra.pid"))
        except OSError:
            pass

    def kill(self):
        """SIGKILL, and wait until the process is gone."""
        pid = self.pid
        assert pid and _proc_alive(pid), f"node {self.index} is not running"
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 30)
        self.frozen = False
        self._forget_pid()

    def stop(self, grace=60):
        """SIGTERM (after SIGCONT, should it be frozen), SIGKILL after grace
        seconds; waits until the process is gone."""
        pid = self.pid
        if pid and _proc_alive(pid):
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, grace):
                _signal(pid, signal.SIGKILL)
                self._wait_gone(pid, 30)
        self.frozen = False
        self._forget_pid()

    def freeze(self):
        """SIGSTOP: the node hangs; its sockets stay open and accept."""
        pid = self.pid
        assert pid and _proc_alive(pid), f"node {self.index} is not running"
        os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        pid = self.pid
        if pid:
            _signal(pid, signal.SIGCONT)
        self.frozen = False

    # --- CQL ---------------------------------------------------------------

    def connect(self, timeout=10.0):
        """A cql_mini.Connection to this node (use it with `with`)."""
        return cql_mini.Connection(self.port, host=self.address, timeout=timeout)

    def query(self, cql, consistency="ONE", timeout=10.0):
        """One statement with this node as coordinator."""
        return cql_mini.query(self.port, cql, consistency, host=self.address, timeout=timeout)

    def ring_tokens(self):
        """The tokens this node holds, from its system.local (a set<text>
        that cql_mini leaves as raw bytes)."""
        raw = self.query("SELECT tokens FROM system.local")[0]["tokens"]
        r = cql_mini._Reader(raw)
        return [int(r.bytes().decode()) for _ in range(r.int())]

    def log_tail(self, n=40):
        return run_dir_log_tail(self.run_dir, n)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


class Cluster:
    """n Cassandra nodes on 127.0.0.1..127.0.0.n, one native port for all.

    Attributes: nodes (list of ClusterNode), port (native; storage is
    port + 1000), addresses, contact_points ("127.0.0.1,127.0.0.2,..."),
    heap, timings (seconds of each phase of start())."""

    def __init__(self, base_dir, n=3, heap=None, port=None, addresses=None):
        self.base_dir = str(base_dir)
        self.n = n
        self.heap = heap or os.environ.get("SLUICE_TEST_CLUSTER_HEAP") or "640m"
        self.addresses = list(addresses or [f"127.0.0.{i}" for i in range(1, n + 1)])
        assert len(self.addresses) == n
        self.seed = self.addresses[0]
        self.port = port
        tokens = balanced_tokens(n)
        self.nodes = [ClusterNode(self, i + 1, a, os.path.join(self.base_dir, f"node{i + 1}"), tokens[i])
                      for i, a in enumerate(self.addresses)]
        self.timings = {}

    def node(self, i):
        """Node i, 1-based: node(1) is the seed on 127.0.0.1."""
        assert 1 <= i <= self.n, f"no node {i} in a cluster of {self.n}"
        return self.nodes[i - 1]

    @property
    def contact_points(self):
        return ",".join(self.addresses)

    def sluice_env(self, keyspace):
        """The environment that points a Sluice server (SluiceServer's env=)
        or `sluice schema` at this cluster."""
        return {"CONTACT_POINTS": self.contact_points, "CASSANDRA_PORT": str(self.port), "KEYSPACE": keyspace}

    def _free_port(self):
        env = dict(os.environ)
        env.pop("CASSANDRA_PORT", None)
        env["CASSANDRA_RUN_DIR"] = os.path.join(self.base_dir, "node1")
        p = subprocess.run([SCRIPT, "free-port", "--address", self.contact_points], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, f"cassandra.sh free-port failed: {out}"
        return int(out.split()[-1])

    # --- start / stop -----------------------------------------------------

    def start(self, timeout=240):
        """Node 1 alone until it answers CQL, then nodes 2..n together
        (auto_bootstrap false), then waits (up to timeout s) until
        wait_healthy() holds. Stops every node it started if that fails."""
        os.makedirs(self.base_dir, exist_ok=True)
        if self.port is None:
            self.port = self._free_port()
        t0 = time.monotonic()
        try:
            self.nodes[0].start()
            t1 = time.monotonic()
            self.timings["node1_cql_s"] = t1 - t0
            procs = [(nd, nd._launch()) for nd in self.nodes[1:]]
            errors = []
            for nd, p in procs:
                try:
                    nd._finish(p)
                except AssertionError as e:
                    errors.append(str(e))
            assert not errors, "\n".join(errors)
            t2 = time.monotonic()
            self.timings["joiners_cql_s"] = t2 - t1
            self._create_health_table(timeout)
            self.wait_healthy(timeout=max(10.0, timeout - (time.monotonic() - t0)))
            self.timings["healthy_s"] = time.monotonic() - t2
            self.timings["total_s"] = time.monotonic() - t0
        except BaseException:
            self.stop_all(grace=10)
            raise
        return self

    def stop_all(self, grace=30):
        """Stops every node by PID, frozen ones included: SIGCONT, SIGTERM,
        SIGKILL whatever still runs after grace seconds. Never raises; safe
        to call twice and on a cluster that never started."""
        pids = {}
        for nd in self.nodes:
            cand = set(nd._pids)
            if nd.pid:
                cand.add(nd.pid)
            for pid in cand:
                if _proc_alive(pid) and self._is_ours(pid, nd):
                    pids[pid] = nd
        for pid in pids:
            _signal(pid, signal.SIGCONT)
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_proc_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _proc_alive(pid):
                _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_proc_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for nd in self.nodes:
            nd.frozen = False
            nd._forget_pid()

    @staticmethod
    def _is_ours(pid, nd):
        """Guards against a recycled PID: the process must be a JVM of
        this node's run dir."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return nd.run_dir.encode() in f.read()
        except OSError:
            return False

    # --- health -------------------------------------------------------------

    def _create_health_table(self, timeout):
        n1 = self.nodes[0]
        n1.query(f"CREATE KEYSPACE IF NOT EXISTS {HEALTH_KS} WITH replication = "
                 f"{{'class': 'SimpleStrategy', 'replication_factor': {self.n}}}")
        n1.query(f"CREATE TABLE IF NOT EXISTS {HEALTH_KS}.probe (node int PRIMARY KEY, at bigint)")
        self.wait_schema_agreement(timeout)

    def peers(self, i):
        """{address: schema_version} of system.peers on node i."""
        rows = self.node(i).query("SELECT peer, rpc_address, host_id, schema_version FROM system.peers")
        return {_inet(r["peer"]): r["schema_version"] for r in rows if r.get("host_id") and r.get("rpc_address")}

    def schema_versions(self):
        """{address: set of schema versions node i sees (its own and its
        peers')} for every node that answers; an error string for one that
        does not."""
        out = {}
        for nd in self.nodes:
            try:
                local = nd.query("SELECT schema_version FROM system.local")[0]["schema_version"]
                out[nd.address] = {local, *self.peers(nd.index).values()}
            except (OSError, cql_mini.CqlError) as e:
                out[nd.address] = f"{type(e).__name__}: {e}"
        return out

    def wait_schema_agreement(self, timeout=60):
        """Until every node sees one schema version, everywhere the same."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.schema_versions()
            sets = list(v.values())
            if all(isinstance(s, set) and len(s) == 1 for s in sets) and len({next(iter(s)) for s in sets}) == 1:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"no schema agreement after {timeout} s: "
                                     f"{ {a: (sorted(x.hex() for x in s) if isinstance(s, set) else s) for a, s in v.items()} }")
            time.sleep(0.5)

    def health(self):
        """A list of problems; empty when the cluster is healthy (see the
        module doc)."""
        problems = []
        for nd in self.nodes:
            others = set(self.addresses) - {nd.address}
            try:
                seen = set(self.peers(nd.index))
                if not others <= seen:
                    problems.append(f"node {nd.index}: system.peers lacks {sorted(others - seen)}")
                    continue
                nd.query(f"INSERT INTO {HEALTH_KS}.probe (node, at) VALUES ({nd.index}, {int(time.time() * 1000)})",
                         consistency="ALL")
            except (OSError, cql_mini.CqlError) as e:
                problems.append(f"node {nd.index}: {type(e).__name__}: {e}")
        return problems

    def wait_down(self, i, timeout=60):
        """Waits until every other running node holds node i down (its
        failure detector has convicted it: a write at ALL through it is
        refused as Unavailable at once instead of timing out); returns the
        seconds it took. Until then a coordinator still sends requests to
        node i: a range read at QUORUM, which has no speculative retry, may
        then wait for range_request_timeout (10 s)."""
        t0 = time.monotonic()
        pending = [nd for nd in self.nodes if nd.index != i and nd.running() and not nd.frozen]
        while pending:
            nd = pending[0]
            try:
                nd.query(f"INSERT INTO {HEALTH_KS}.probe (node, at) VALUES ({nd.index}, {int(time.time() * 1000)})",
                         consistency="ALL")
            except cql_mini.CqlError as e:
                if e.code == 0x1000:  # Unavailable
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() - t0 >= timeout:
                raise AssertionError(f"node {nd.index} still holds node {i} up after {timeout} s")
            time.sleep(0.5)
        return time.monotonic() - t0

    def wait_healthy(self, timeout=120):
        """Waits until health() is empty; returns the seconds it took.
        Raises AssertionError with the last problems and log tails."""
        t0 = time.monotonic()
        while True:
            problems = self.health()
            if not problems:
                return time.monotonic() - t0
            if time.monotonic() - t0 >= timeout:
                tails = "\n".join(f"--- node {nd.index} ({nd.address}) system.log:\n{nd.log_tail(15)}"
                                  for nd in self.nodes)
                raise AssertionError(f"cluster not healthy after {timeout} s: {problems}\n{tails}")
            time.sleep(1.0)
