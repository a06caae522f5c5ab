"""GET /metrics on the admin port (API.md "Operations endpoints"): the
admin token, the Prometheus text format, and counters that follow what the
clients did, checked directly and through a real Prometheus server (Debian's
`prometheus`, which scripts/deps.sh --test installs) scraping Sluice."""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from sluice_client import BACKEND, assert_error, await_depth, await_until, queue_depth, sleep_until, unique_name

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value}; every line must be a comment or a
    well-formed sample, and every sample's family must have been declared
    with # TYPE before it, once."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            fam = line.split()[2]
            assert fam not in typed, f"family {fam} declared twice"
            typed.add(fam)
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample: {line!r}"
        name, labels = m.group(1), frozenset(LABEL.findall(m.group(3) or ""))
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or fam in typed, f"sample before its # TYPE: {line!r}"
        assert (name, labels) not in out, f"sample twice: {line!r}"
        out[(name, labels)] = float(m.group(4))
    return out


def scrape(server):
    r = requests.get(server.admin_url + "/metrics", headers={"Authorization": "Bearer " + server.admin_token},
                     timeout=10, verify=False)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


def queue_value(m, name, q):
    return value(m, name, account="dev", queue=q)


def test_metrics_need_the_admin_token(server):
    for h in [{}, {"Authorization": "Bearer wrong-token-0123456789"}]:
        r = requests.get(server.admin_url + "/metrics", headers=h, timeout=10, verify=False)
        assert assert_error(r, 401)["code"] == "AuthenticationFailed"
    # Not on the queue port, where no admin token is asked for.
    r = requests.get(server.base_url + "/metrics", timeout=10, verify=False)
    assert r.status_code == 404
    scrape(server)


def test_counters_follow_what_clients_did(server, client):
    q = unique_name("m")
    assert client.create_queue(q).status_code == 201
    route = "/api/v1/accounts/{account}/queues/{q}/messages"
    before = scrape(server)
    for i in range(5):
        client.put_ok(q, f"one {i}")
    assert client.put_batch(q, ["b1", "b2", "b3"]).status_code in (200, 201)
    got = []
    await_until(lambda: got.extend(client.receive_list(q, max_messages=10, invisibility=60)) or len(got) == 8,
                desc="the 8 messages received")
    receipts = [m["popReceipt"] for m in got]
    for rc in receipts[:2]:
        assert client.ack(q, rc).status_code == 204
    assert client.ack_batch(q, receipts[2:6]).status_code == 200
    assert client.receive_list(q, max_messages=10) == []  # the other 2 are leased
    m = scrape(server)
    assert queue_value(m, "sluice_queue_puts_total", q) == 8
    assert queue_value(m, "sluice_queue_deliveries_total", q) == 8
    assert queue_value(m, "sluice_queue_redeliveries_total", q) == 0
    assert queue_value(m, "sluice_queue_acks_total", q) == 6
    receives = queue_value(m, "sluice_queue_receives_total", q)
    empty = queue_value(m, "sluice_queue_empty_receives_total", q)
    assert empty >= 1 and receives >= 2 and receives - empty >= 1
    # The engine's compare-and-sets: 8 leases and 6 acks at least, sent in
    # conditional requests of one or more writes each.
    applied = value(m, "sluice_engine_cas_total", outcome="applied") - value(
        before, "sluice_engine_cas_total", outcome="applied")
    rounds = value(m, "sluice_engine_cas_rounds_total") - value(before, "sluice_engine_cas_rounds_total")
    assert applied >= 14 and 1 <= rounds <= applied + value(m, "sluice_engine_cas_total", outcome="not_applied")
    # The HTTP layer: five 201s on the put route, and their latencies.
    labels = dict(server="queue", method="POST", route=route)
    assert value(m, "sluice_http_requests_total", status="201", **labels) - value(
        before, "sluice_http_requests_total", status="201", **labels) == 5
    assert value(m, "sluice_http_request_duration_seconds_count", **labels) - value(
        before, "sluice_http_request_duration_seconds_count", **labels) == 5
    inf = value(m, "sluice_http_request_duration_seconds_bucket", le="+Inf", **labels)
    assert inf == value(m, "sluice_http_request_duration_seconds_count", **labels)
    # Buckets are cumulative.
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                     if k[0] == "sluice_http_request_duration_seconds_bucket" and
                     dict(k[1]).get("route") == route and dict(k[1]).get("method") == "POST")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # A route that does not exist is counted under "-", whatever was asked.
    nf = value(m, "sluice_http_requests_total", server="queue", method="-", route="-", status="404")
    assert client.request("GET", "/no/such/route").status_code == 404
    assert value(scrape(server), "sluice_http_requests_total", server="queue", method="-", route="-",
                 status="404") == nf + 1
    if BACKEND == "sqlite":
        assert value(m, "sluice_store_commits_total") > value(before, "sluice_store_commits_total")
        # The 8 leases were answered before their commits, in 1 to 8
        # requests to the writer (one per bucket a receive leased from).
        early = value(m, "sluice_store_early_answers_total") - value(before, "sluice_store_early_answers_total")
        assert 1 <= early <= 8, early
    else:  # the CQL client, per node: the test's one node is up and was sent this test's requests
        nodes = {dict(k[1])["node"] for k in m if k[0] == "sluice_cql_node_up"}
        assert len(nodes) == 1, nodes
        node = nodes.pop()
        dc = next(dict(k[1])["dc"] for k in m if k[0] == "sluice_cql_node_up")
        assert value(m, "sluice_cql_node_up", node=node, dc=dc) == 1
        assert value(m, "sluice_cql_connections", node=node, dc=dc) >= 1
        assert value(m, "sluice_cql_connects_total", node=node, dc=dc) >= 1
        assert value(m, "sluice_cql_requests_total", node=node, dc=dc) - value(
            before, "sluice_cql_requests_total", node=node, dc=dc) >= 8  # 8 puts at least
    assert value(m, "process_resident_memory_bytes") > 0
    assert value(m, "process_open_fds") > 0


def test_redeliveries_and_dead_letters(server, client):
    q, dlq = unique_name("mr"), unique_name("mdlq")
    assert client.create_queue(dlq).status_code == 201
    assert client.create_queue(q, maxDeliveryCount=2, dlqName=dlq).status_code == 201
    client.put_ok(q, "bounces")
    assert len(client.receive_list(q, invisibility=1)) == 1

    def received_again():
        return client.receive_list(q, invisibility=1)
    again = await_until(received_again, timeout=20, desc="the redelivery after the lease ran out")
    assert again[0]["deliveryCount"] == 2
    # Its deliveries used up, a receive once its lease ran out moves it to
    # the DLQ instead of delivering it.
    def moved():
        assert client.receive_list(q) == []
        return client.receive_list(dlq)
    await_until(moved, timeout=20, desc="the message in the DLQ")
    m = scrape(server)
    assert queue_value(m, "sluice_queue_deliveries_total", q) == 2
    assert queue_value(m, "sluice_queue_redeliveries_total", q) == 1
    assert queue_value(m, "sluice_queue_dead_letters_total", q) == 1
    assert queue_value(m, "sluice_queue_deliveries_total", dlq) == 1


def test_depth_follows_every_kind_of_change(server, client):
    """sluice_queue_messages and the oldest message's age, which the node
    keeps in memory as it works (no store read per scrape), equal the
    queue's statistics (which count the store's rows) after each step."""
    q = unique_name("md")
    assert client.create_queue(q).status_code == 201
    for i in range(10):
        client.put_ok(q, f"d{i}")
    await_depth(server, client, q, visible=10, inFlight=0, delayed=0)
    for i in range(2):
        client.put_ok(q, f"late{i}", initial_invisibility=120)
    await_depth(server, client, q, visible=10, inFlight=0, delayed=2)
    got = client.receive_list(q, max_messages=4, invisibility=120)
    assert len(got) == 4
    await_depth(server, client, q, visible=6, inFlight=4, delayed=2)
    for m in got[:2]:
        assert client.ack(q, m["popReceipt"]).status_code == 204
    await_depth(server, client, q, visible=6, inFlight=2, delayed=2)
    assert client.update(q, got[2]["popReceipt"], new_invisibility=0).status_code == 200
    await_depth(server, client, q, visible=7, inFlight=1, delayed=2)
    # A lease that runs out makes its message visible again with nothing
    # written: the gauge follows the clock.
    assert len(client.receive_list(q, max_messages=1, invisibility=1)) == 1
    assert queue_depth(server, q)["inFlight"] == 2
    await_depth(server, client, q, visible=7, inFlight=1, delayed=2)
    assert client.purge(q).status_code in (200, 204)
    await_depth(server, client, q, visible=0, inFlight=0, delayed=0, oldestMessageAgeSeconds=0)

    # Dead letters and redrive move messages between queues' gauges.
    src, dlq = unique_name("mds"), unique_name("mdq")
    assert client.create_queue(dlq).status_code == 201
    assert client.create_queue(src, maxDeliveryCount=1, dlqName=dlq).status_code == 201
    client.put_ok(src, "bounces")
    assert len(client.receive_list(src, invisibility=1)) == 1
    await_until(lambda: client.receive_list(src) == [] and client.stats_json(dlq)["visible"] == 1, timeout=20,
                desc="the message in the DLQ")
    await_depth(server, client, src, visible=0, inFlight=0, delayed=0)
    await_depth(server, client, dlq, visible=1, inFlight=0, delayed=0)
    assert client.redrive(dlq, src).status_code == 200
    await_depth(server, client, dlq, visible=0)
    await_depth(server, client, src, visible=1)
    # A deleted queue leaves the metrics.
    assert client.delete_queue(src).status_code in (200, 204)
    await_until(lambda: queue_depth(server, src) is None, desc="the deleted queue gone from /metrics")


def test_depth_is_exact_once_concurrent_clients_stop(server):
    """Eight clients put (some delayed), receive with short and long
    leases, ack, return and batch at once; once they stop, the gauges equal
    the statistics, and again after the short leases ran out."""
    c = server.client()
    q = unique_name("mc")
    assert c.create_queue(q).status_code == 201
    until = time.monotonic() + 4
    errors = []

    def worker(k):
        rnd = random.Random(k)
        cc = server.client()
        try:
            while time.monotonic() < until:
                op = rnd.random()
                if op < 0.3:
                    cc.put_ok(q, f"w{k}")
                elif op < 0.4:
                    assert cc.put_batch(q, [f"b{k}"] * rnd.randint(2, 10)).status_code in (200, 201)
                elif op < 0.5:
                    cc.put_ok(q, f"late{k}", initial_invisibility=rnd.choice([1, 2, 120]))
                else:
                    msgs = cc.receive_list(q, max_messages=rnd.randint(1, 8), invisibility=rnd.choice([1, 2, 120]))
                    acks = [m["popReceipt"] for m in msgs if rnd.random() < 0.6]
                    if acks:
                        assert cc.ack_batch(q, acks).status_code == 200
                    for m in msgs:
                        if m["popReceipt"] not in acks and rnd.random() < 0.3:
                            assert cc.update(q, m["popReceipt"], new_invisibility=0).status_code in (200, 409)
        except Exception as e:  # reported below, with the others
            errors.append(repr(e))
        finally:
            cc.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    st = c.stats_json(q)
    assert st["size"] > 0, st
    await_depth(server, c, q)
    sleep_until(time.monotonic() + 2.5)  # the 1 and 2 s leases and delays ran out
    await_depth(server, c, q)
    c.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(server, tmp_path):
    """A real Prometheus scraping the admin port every second with the
    admin token; stopped by its PID."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/deps.sh --test"
    port = free_port()
    tls = "    tls_config: {insecure_skip_verify: true}\n" if server.admin_scheme == "https" else ""
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: sluice\n"
        f"    scheme: {server.admin_scheme}\n"
        f"    authorization: {{credentials: {server.admin_token}}}\n"
        f"{tls}"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.admin_port}']}}]\n")
    log = open(tmp_path / "prometheus.log", "wb")
    p = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            if p.poll() is not None:
                raise AssertionError("prometheus exited: " + (tmp_path / "prometheus.log").read_text()[-2000:])
            try:
                return requests.get(url + "/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        await_until(ready, timeout=60, interval=0.2, desc="Prometheus ready")
        yield url
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()


def query(prom, expr):
    r = requests.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    d = r.json()
    assert d["status"] == "success", d
    return [float(s["value"][1]) for s in d["data"]["result"]]


def test_a_real_prometheus_scrapes_sluice(server, client, prometheus):
    q = unique_name("mp")
    assert client.create_queue(q).status_code == 201
    await_until(lambda: query(prometheus, 'up{job="sluice"}') == [1.0], timeout=30, interval=0.5,
                desc="Prometheus scraping Sluice with the admin token (up == 1)")
    for i in range(7):
        client.put_ok(q, f"p{i}")
    sel = f'{{account="dev",queue="{q}"}}'
    await_until(lambda: query(prometheus, "sluice_queue_puts_total" + sel) == [7.0], timeout=30, interval=0.5,
                desc="7 puts seen through Prometheus")
    # The queue's depth goes up to 7, to 7 in flight, and back to 0.
    depth = f'sluice_queue_messages{{account="dev",queue="{q}",state="%s"}}'
    await_until(lambda: query(prometheus, depth % "visible") == [7.0], timeout=30, interval=0.5,
                desc="a depth of 7 seen through Prometheus")
    got = []
    await_until(lambda: got.extend(client.receive_list(q, max_messages=10)) or len(got) == 7, desc="7 received")
    await_until(lambda: query(prometheus, depth % "in_flight") == [7.0] and
                query(prometheus, depth % "visible") == [0.0], timeout=30, interval=0.5,
                desc="7 in flight seen through Prometheus")
    assert client.ack_batch(q, [m["popReceipt"] for m in got]).status_code == 200
    await_until(lambda: query(prometheus, "sluice_queue_acks_total" + sel) == [7.0], timeout=30, interval=0.5,
                desc="7 acks seen through Prometheus")
    await_until(lambda: [query(prometheus, depth % s) for s in ("visible", "in_flight", "delayed")] ==
                [[0.0], [0.0], [0.0]], timeout=30, interval=0.5, desc="the depth back to 0 through Prometheus")
    # The HTTP histogram is usable as Prometheus's own functions read it.
    p99 = query(prometheus, 'histogram_quantile(0.99, sum by (le) (sluice_http_request_duration_seconds_bucket'
                            '{server="queue",route="/api/v1/accounts/{account}/queues/{q}/messages"}))')
    assert len(p99) == 1 and 0 < p99[0] <= 30


def wait_port(port, proc, log):
    def up():
        if proc.poll() is not None:
            raise AssertionError("the receiver exited: " + log.read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    await_until(up, timeout=60, interval=0.2, desc=f"a listener on port {port}")


class Carbon:
    """A real carbon receiver (Debian's graphite-carbon: carbon-cache with
    its plaintext line receiver) on its own ports and storage, stopped by
    PID; whisper-fetch reads back what it stored."""

    def __init__(self, root):
        self.root, self.port, self.proc = root, free_port(), None
        conf = root / "conf"
        conf.mkdir()
        self.whisper = root / "storage" / "whisper"
        (conf / "carbon.conf").write_text(
            "[cache]\n"
            f"STORAGE_DIR = {root / 'storage'}\nLOCAL_DATA_DIR = {self.whisper}\n"
            f"WHITELISTS_DIR = {root / 'storage' / 'lists'}\nCONF_DIR = {conf}\nLOG_DIR = {root / 'log'}\n"
            f"PID_DIR = {root}\nENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\n"
            "MAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n"
            f"LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {self.port}\nENABLE_UDP_LISTENER = False\n"
            f"PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = {free_port()}\n"
            f"CACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = {free_port()}\nLOG_LISTENER_CONNECTIONS = False\n")
        (conf / "storage-schemas.conf").write_text("[all]\npattern = .*\nretentions = 1s:1h\n")
        self.conf = conf / "carbon.conf"

    def start(self):
        binary = shutil.which("carbon-cache")
        assert binary, "carbon-cache is not installed: run scripts/deps.sh --test"
        self.log = self.root / "carbon.out"
        self.proc = subprocess.Popen([binary, f"--config={self.conf}", "--nodaemon", "start"],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=self.root,
                                     start_new_session=True)
        wait_port(self.port, self.proc, self.log)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def last(self, *path):
        """The newest value stored for the series, or None."""
        f = self.whisper.joinpath(*path[:-1], path[-1] + ".wsp")
        if not f.exists():
            return None
        r = subprocess.run(["whisper-fetch", f"--from={int(time.time()) - 3600}", str(f)], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:  # carbon may be creating the file right now: read it again later
            return None
        vals = [float(v) for _, v in (line.split() for line in r.stdout.splitlines()) if v != "None"]
        return vals[-1] if vals else None


@pytest.fixture
def carbon(tmp_path):
    c = Carbon(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_graphite_push_to_a_real_carbon_receiver(server_factory, carbon):
    srv = server_factory("graphite", env={"USE_METRICS_GRAPHITE": "true",
                                          "GRAPHITE_URL": f"127.0.0.1:{carbon.port}",
                                          "GRAPHITE_PREFIX": "test.sluice", "GRAPHITE_INTERVAL": "1"})
    c = srv.client()
    q = unique_name("g")
    assert c.create_queue(q).status_code == 201
    for i in range(4):
        c.put_ok(q, f"g{i}")
    await_until(lambda: carbon.last("test", "sluice", "sluice_queue_puts_total", "dev", q) == 4.0, timeout=60,
                interval=0.5, desc="4 puts stored by carbon")
    # The HTTP layer's figures go too, with the route's characters made safe
    # (carbon writes each series' file on its own time).
    await_until(lambda: carbon.last("test", "sluice", "sluice_http_requests_total", "queue", "POST",
                                    "_api_v1_accounts__account__queues__q__messages", "201") == 4.0,
                timeout=60, interval=0.5, desc="the puts' 201s stored by carbon")
    # With the receiver down, requests go on, and the server says why no
    # figures arrive (once, not at every push).
    carbon.stop()
    for i in range(20):
        c.put_ok(q, f"down{i}")
    await_until(lambda: any("graphite: cannot push to" in line for line in srv.lines), timeout=30,
                desc="the push failure logged")
    assert c.receive_list(q, max_messages=10)
    # Back up: the next pushes carry the counters on.
    carbon.start()
    await_until(lambda: carbon.last("test", "sluice", "sluice_queue_puts_total", "dev", q) == 24.0, timeout=60,
                interval=0.5, desc="24 puts stored by carbon after it came back")
    assert sum("graphite: cannot push to" in line for line in srv.lines) == 1
    assert any("graphite: pushing to" in line and "again" in line for line in srv.lines)
    c.close()


def test_graphite_needs_its_url(tmp_path):
    from sluice_client import BINARY
    r = subprocess.run([BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", str(tmp_path / "d")],
                       env=dict(os.environ, USE_METRICS_GRAPHITE="true"), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "GRAPHITE_URL" in r.stderr


def test_event_log_counters(server, client):
    """Ingests by outcome and query pages (the module's server is shared, so
    the test reads differences)."""
    before = scrape(server)
    eid = unique_name("ev")
    ev = {"id": eid, "type": "metric.test", "data": {"n": 1}}
    assert client.put_event(ev).status_code == 201
    assert client.put_event(ev).status_code == 200  # the same event again: matched
    assert client.put_event(dict(ev, data={"n": 2})).status_code == 409  # another with its id: conflict
    assert client.put_event({"type": "metric.test"}).status_code == 201
    assert client.query_events({"type": "metric.test"}).status_code == 200
    m = scrape(server)

    def delta(name, **labels):
        return value(m, name, **labels) - value(before, name, **labels)
    assert delta("sluice_events_ingested_total", outcome="created") == 2
    assert delta("sluice_events_ingested_total", outcome="matched") == 1
    assert delta("sluice_events_ingested_total", outcome="conflict") == 1
    assert delta("sluice_events_ingest_duration_seconds_count") == 4
    assert delta("sluice_events_queries_total") >= 1
    assert delta("sluice_events_query_duration_seconds_count") == delta("sluice_events_queries_total")


def test_subscription_lag_and_deliveries(server, client):
    q, name = unique_name("msq"), unique_name("msub")
    assert client.create_queue(q).status_code == 201
    typ = unique_name("metric.sub")
    assert client.create_sub(name, q, {"types": [typ]}, start="earliest").status_code == 201
    for i in range(3):
        assert client.put_event({"type": typ, "data": {"i": i}}).status_code == 201
    labels = dict(account="dev", subscription=name)

    def delivered():
        m = scrape(server)
        return value(m, "sluice_subscription_events_delivered_total", **labels) == 3 and m
    m = await_until(delivered, timeout=60, interval=0.5, desc="3 events delivered by the subscription")
    assert len(client.receive_list(q, max_messages=10)) == 3
    # Caught up: its lag is how far behind the horizon it looked last, under a minute here.
    lag = m.get(("sluice_subscription_lag_seconds", frozenset(labels.items())))
    assert lag is not None and 0 <= lag < 60


def test_counters_start_again_after_a_restart(server_factory):
    srv = server_factory("restart")
    c = srv.client()
    q = unique_name("mrs")
    assert c.create_queue(q).status_code == 201
    for i in range(3):
        c.put_ok(q, f"r{i}")
    assert queue_value(scrape(srv), "sluice_queue_puts_total", q) == 3
    c.close()
    srv.stop()
    srv.start()
    c = srv.client()
    # A node counts what it did since it started: nothing yet for this queue.
    assert queue_value(scrape(srv), "sluice_queue_puts_total", q) == 0
    c.put_ok(q, "after")
    got = []
    await_until(lambda: got.extend(c.receive_list(q, max_messages=10)) or len(got) == 4,
                desc="the 3 messages of before the restart and the new one")
    m = scrape(srv)
    assert queue_value(m, "sluice_queue_puts_total", q) == 1
    assert queue_value(m, "sluice_queue_deliveries_total", q) == 4
    # The depth after a restart: the node recounts the queue from the store
    # (the 4 leased above, a delayed one and a visible one).
    c.put_ok(q, "visible")
    c.put_ok(q, "delayed", initial_invisibility=120)
    c.close()
    srv.stop()
    srv.start()
    c = srv.client()
    await_depth(srv, c, q, visible=1, inFlight=4, delayed=1)
    c.close()


def statements(m, table, kind):
    return value(m, "sluice_store_statements_total", table=table, kind=kind)


def test_store_statements_by_table_and_kind(server_factory):
    """sluice_store_statements_total says what each operation costs the
    store, table by table: a put is one plain write of a message row, a
    lease and an ack one conditional write each, on both stores (the engine
    is the same); the figures bench/paxos_rounds.sh reports per message."""
    srv = server_factory("statements")
    c = srv.client()
    q = unique_name("st")
    assert c.create_queue(q).status_code == 201
    c.put_ok(q, "warm")  # the first put of a node claims a block of ids
    got = c.receive_list(q, max_messages=1)
    assert len(got) == 1 and c.ack(q, got[0]["popReceipt"]).status_code == 204
    before = scrape(srv)
    for i in range(5):
        c.put_ok(q, f"s{i}")
    assert c.put_batch(q, ["b1", "b2", "b3"]).status_code in (200, 201)
    mid = scrape(srv)
    assert statements(mid, "messages", "write") - statements(before, "messages", "write") == 8
    assert statements(mid, "messages", "cas") == statements(before, "messages", "cas")
    got = []
    await_until(lambda: got.extend(c.receive_list(q, max_messages=10, invisibility=60)) or len(got) == 8,
                desc="the 8 messages received")
    assert c.ack_batch(q, [m["popReceipt"] for m in got]).status_code == 200
    m = scrape(srv)
    assert statements(m, "messages", "write") == statements(mid, "messages", "write")
    assert statements(m, "messages", "cas") - statements(mid, "messages", "cas") == 16  # 8 leases, 8 acks
    # Every sample names a table of the store and one of the four kinds.
    kinds = {dict(k[1])["kind"] for k in m if k[0] == "sluice_store_statements_total"}
    tables = {dict(k[1])["table"] for k in m if k[0] == "sluice_store_statements_total"}
    assert kinds <= {"get", "slice", "write", "cas"} and {"messages", "queues", "accounts"} <= tables, (kinds, tables)
    c.close()
