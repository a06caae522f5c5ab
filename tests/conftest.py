"""Fixtures shared by the black-box suites (tests/api, tests/crash,
tests/cassandra).

Each test module gets its own server over its own temporary data directory
(fixture `server`); tests that need to kill or restart servers use
`server_factory`. The helpers live in tests/api/sluice_client.py.

The backend is SLUICE_TEST_BACKEND: sqlite (the default: the embedded
store) or cassandra (a node on 127.0.0.1:SLUICE_CASSANDRA_PORT, which
scripts/test.sh starts once for the run). On Cassandra every server gets a
keyspace of its own, so one module's queues never show in another's; the
same tests run on both backends. A test that applies to one backend only
says so with `@pytest.mark.backend("cassandra", reason=...)` and is then
reported as skipped, with the reason, on the other: nothing is dropped
silently.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "api"))

from sluice_client import BACKEND, CASSANDRA_HOST, CASSANDRA_PORT, CLOSED_SERVERS, LIVE_SERVERS, SluiceServer  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend(name, reason=...): the test applies to that backend only; skipped on the other")


def pytest_report_header(config):
    if BACKEND == "cassandra":
        return f"sluice backend: cassandra at {CASSANDRA_HOST}:{CASSANDRA_PORT}"
    return f"sluice backend: {BACKEND}"


def pytest_collection_modifyitems(config, items):
    for item in items:
        m = item.get_closest_marker("backend")
        if m and BACKEND not in m.args:
            why = m.kwargs.get("reason") or f"runs on the {'/'.join(m.args)} backend only"
            item.add_marker(pytest.mark.skip(reason=f"{why} (SLUICE_TEST_BACKEND={BACKEND})"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    srv = SluiceServer(tmp_path_factory.mktemp("data"), name=request.module.__name__)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def server_factory(tmp_path):
    """Returns start(name="s") -> a started SluiceServer on a fresh data
    directory; every server is stopped when the test ends."""
    made = []

    def start(name="s", **kw):
        """kw: keyspace= (to share one among several servers),
        cassandra_port=, env= (see SluiceServer)."""
        srv = SluiceServer(tmp_path / f"data-{name}-{len(made)}", name=name, **kw)
        made.append(srv)
        return srv.start()

    yield start
    for s in made:
        s.close()


def pytest_runtest_setup(item):
    CLOSED_SERVERS.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the recent log of the servers running, and of those the test
    closed (a crash test closes its server in a finally clause, before this
    runs), to a failing test's report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in LIVE_SERVERS:
            rep.sections.append((f"sluice log ({s.name})", s.log_tail(40)))
        for s in CLOSED_SERVERS:
            rep.sections.append((f"sluice log ({s.name}, closed by the test)", s.log_tail(200)))


def pytest_sessionfinish(session, exitstatus):
    """A safety net: a server a test started and did not stop (an assertion
    failed before its close) is stopped by its PID here, so no test run
    leaves a sluice process behind."""
    for srv in list(LIVE_SERVERS):
        try:
            srv.close()
        except Exception:  # noqa: BLE001 - best effort at the very end
            pass
