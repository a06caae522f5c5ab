"""The `sluice` client commands, end to end against a dev server: the
binary signs its requests with SLUICE_KEY, with SigV4 (its default) or the
Signed scheme, and the server verifies them."""

import json
import os
import subprocess

import pytest

from sluice_client import BINARY, REPO, await_until, unique_name


def run(server, *args, key=None, account="dev", url=None, stdin=None, env_extra=None):
    env = dict(os.environ)
    env.update({"SLUICE_URL": url or server.base_url, "SLUICE_ACCOUNT": account,
                "SLUICE_KEY": key if key is not None else server.key})
    env.update(env_extra or {})
    p = subprocess.run([BINARY, *args], capture_output=True, text=True, env=env, input=stdin, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(params=["sigv4", "signed"])
def scheme(request, monkeypatch):
    monkeypatch.setenv("SLUICE_AUTH_SCHEME", request.param)
    return request.param


def test_queue_put_get_ack_round_trip(server, client, scheme):
    q = unique_name("cli")
    rc, out, err = run(server, "queue", "create", q)
    assert rc == 0 and f"created queue {q}" in out, (rc, out, err)
    rc, out, err = run(server, "queue", "create", q)
    assert rc == 0 and "already exists" in out, (rc, out, err)
    rc, out, err = run(server, "queue", "list")
    assert rc == 0 and q in out.split(), (rc, out, err)
    rc, out, err = run(server, "put", q, "hello from the terminal")
    assert rc == 0 and len(out.strip()) == 32, (rc, out, err)
    rc, out, err = run(server, "queue", "stats", q)
    assert rc == 0 and "size" in out and " 1" in out, (rc, out, err)
    rc, out, err = run(server, "get", q, "--json")
    assert rc == 0, (rc, out, err)
    m = json.loads(out)["messages"][0]
    assert m["message"] == "hello from the terminal"
    rc, out, err = run(server, "ack", q, m["popReceipt"])
    assert rc == 0 and "acked" in out, (rc, out, err)
    # The same receipt again: stale (409), exit 1.
    rc, out, err = run(server, "ack", q, m["popReceipt"])
    assert rc == 1 and "409" in err, (rc, out, err)
    assert client.stats_json(q)["size"] == 0
    rc, out, err = run(server, "queue", "delete", q)
    assert rc == 0 and "deleted" in out, (rc, out, err)


def test_get_human_output_and_empty_queue(server, client, scheme):
    q = client.new_queue("clih")
    rc, out, err = run(server, "get", q)
    assert rc == 1 and "no message" in err, (rc, out, err)
    rc, out, err = run(server, "put", q, "-", stdin="from stdin\n")
    assert rc == 0, (rc, out, err)
    rc, out, err = run(server, "get", q, "--wait", "1", "--invisibility", "60")
    assert rc == 0 and out == "from stdin\n\n" and "receipt: " in err, (rc, out, err)
    # A message the shell would split, and one with JSON in it.
    for text in ("two words & a {brace}", '{"json": "body"}'):
        rc, out, err = run(server, "put", q, text)
        assert rc == 0, (rc, out, err)
    assert sorted(m["message"] for m in client.drain(q)) == sorted(["two words & a {brace}", '{"json": "body"}'])


def test_get_waits_for_a_message(server, client):
    q = client.new_queue("cliw")
    p = subprocess.Popen([BINARY, "get", q, "--wait", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ, SLUICE_URL=server.base_url, SLUICE_ACCOUNT="dev",
                                             SLUICE_KEY=server.key))
    try:
        client.put_ok(q, "late")
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and out.startswith("late"), (p.returncode, out, err)


def test_exit_codes(server, admin_other_key, scheme):
    # not found
    rc, out, err = run(server, "queue", "stats", unique_name("missing"))
    assert rc == 1 and "QueueNotFound" in err, (rc, out, err)
    # usage
    assert run(server)[0] != 0
    assert run(server, "queue")[0] == 2
    assert run(server, "queue", "frobnicate", "x")[0] == 2
    assert run(server, "put", "only-queue")[0] == 2
    assert run(server, "get", "q", "--wait", "99")[0] == 2
    assert run(server, "queue", "create", "bad/name")[0] == 2
    assert run(server, "queue", "list", key="not-a-key")[0] == 2
    assert run(server, "queue", "list", url="https://example.invalid")[0] == 2
    assert run(server, "queue", "list", env_extra={"SLUICE_AUTH_SCHEME": "basic"})[0] == 2
    # auth: a well-formed key that is not dev's, or another account's key
    rc, out, err = run(server, "queue", "list", key="A" * 85 + "A")
    assert rc == 3 and "401" in err, (rc, out, err)
    rc, out, err = run(server, "queue", "list", key=admin_other_key)
    assert rc == 3, (rc, out, err)
    # server down: nothing listens on this port (the admin port of a closed socket)
    rc, out, err = run(server, "queue", "list", url="http://127.0.0.1:1")
    assert rc == 4 and "cannot connect" in err, (rc, out, err)


def test_help(server):
    p = subprocess.run([BINARY, "help", "client"], capture_output=True, text=True)
    assert p.returncode == 0 and "SLUICE_KEY" in p.stdout


def test_readme_lists_every_setting_as_the_binary_does():
    """The README's tables of settings are `sluice help config`, row for row,
    and `sluice help` names every setting's flag or variable and file key."""
    p = subprocess.run([BINARY, "help", "config"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| `") or ln.startswith("|  |")]
    assert len(rows) > 20, p.stdout
    readme = open(os.path.join(REPO, "README.md")).read()
    missing = [r for r in rows if r not in readme.splitlines()]
    assert not missing, "README.md lacks these rows of `sluice help config`:\n" + "\n".join(missing)
    usage = subprocess.run([BINARY, "help"], capture_output=True, text=True).stdout
    for r in rows:
        cells = [c.strip().strip("`") for c in r.strip("|").split("|")]
        flag, env, key = cells[0], cells[1], cells[2]
        assert key in usage and env in usage and flag in usage, (r, usage)


def test_each_setting_is_read_from_the_file_the_environment_and_the_flags(tmp_path):
    """The same bad value is refused under each of a setting's three names,
    and an alias of a file key works."""
    conf = tmp_path / "sluice.conf"
    conf.write_text("store_threads = 0\n")
    for args, env in (
        (["--config", str(conf)], {}),
        ([], {"SLUICE_STORE_THREADS": "0"}),
        (["--store-threads", "0"], {}),
    ):
        p = subprocess.run([BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", str(tmp_path / "d")] + args,
                           env={**os.environ, **env}, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and "bad value '0'" in p.stderr, (args, env, p.returncode, p.stderr)
    conf.write_text("consistency = SERIAL\n")  # the alias of consistency_level; SERIAL is not a read level
    p = subprocess.run([BINARY, "dev", "--config", str(conf), "--port", "0", "--data", str(tmp_path / "d")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "bad value 'SERIAL' for consistency" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def admin_other_key(server):
    a = server.admin()
    name = unique_name("clio")
    r = a.create_account(name)
    assert r.status_code == 201
    yield r.json()["keys"]["primary"]
    a.close()


def test_events_put_get_query(server, client, scheme):
    p = unique_name("clie")
    ids = []
    for i in range(5):
        ev = {"id": f"{p}-{i}", "type": f"{p}.{'ab'[i % 2]}", "tags": ["even"] if i % 2 == 0 else []}
        rc, out, err = run(server, "events", "put", json.dumps(ev))
        assert rc == 0 and out.startswith(f"{p}-{i} "), (rc, out, err)
        ids.append(ev["id"])
    client.await_readable(out.split()[1])
    rc, out, err = run(server, "events", "put", "-", stdin=json.dumps({"id": ids[0], "type": f"{p}.a",
                                                                       "tags": ["even"]}))
    assert rc == 0 and "stored already" in out, (rc, out, err)
    rc, out, err = run(server, "events", "put", json.dumps({"id": ids[0], "type": "other"}))
    assert rc == 1 and "409" in err, (rc, out, err)
    rc, out, err = run(server, "events", "put", '{"type": "bad type"}')
    assert rc == 2 and "400" in err, (rc, out, err)
    rc, out, err = run(server, "events", "get", ids[2])
    assert rc == 0 and json.loads(out)["id"] == ids[2], (rc, out, err)
    rc, out, err = run(server, "events", "get", "no-such-event")
    assert rc == 1 and "404" in err, (rc, out, err)
    # Paged to the end (a page of 1), filtered, in both orders.
    rc, out, err = run(server, "events", "query", "--type", f"{p}.a", "--type", f"{p}.b", "--tag", "even",
                       "--limit", "1")
    assert rc == 0 and [json.loads(x)["id"] for x in out.splitlines()] == ids[0::2], (rc, out, err)
    rc, out, err = run(server, "events", "query", "--type", f"{p}.a", "--desc")
    assert rc == 0 and [json.loads(x)["id"] for x in out.splitlines()] == ids[0::2][::-1], (rc, out, err)
    rc, out, err = run(server, "events", "query", "--color", "red")
    assert rc == 2, (rc, out, err)


def read_line(proc, timeout=30.0):
    """The next line the process writes, or a failure after timeout s."""
    import select
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from {proc.args} within {timeout} s"
    return proc.stdout.readline()


def test_events_tail_follows_the_log(server, client):
    p = unique_name("tail")
    env = dict(os.environ, SLUICE_URL=server.base_url, SLUICE_ACCOUNT="dev", SLUICE_KEY=server.key)
    first = client.put_event({"id": f"{p}-0", "type": p}).json()
    proc = subprocess.Popen([BINARY, "events", "tail", "--type", p, "--start", first["recordedAt"]],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
    try:
        assert json.loads(read_line(proc))["id"] == f"{p}-0"
        for i in range(1, 4):
            client.put_event({"id": f"{p}-{i}", "type": p})
            client.put_event({"type": p + "-other"})
            assert json.loads(read_line(proc))["id"] == f"{p}-{i}"
    finally:
        proc.kill()
        proc.wait()


def test_subscriptions_create_list_delete(server, client, scheme):
    p = unique_name("clis")
    q = client.new_queue("cliq")
    rc, out, err = run(server, "subscriptions", "create", p, q, "--type", f"{p}.a", "--tag", "eu", "--start",
                       "earliest")
    assert rc == 0 and out.startswith(f"{p} from "), (rc, out, err)
    rc, out, err = run(server, "subscriptions", "create", p, q, "--tag", "eu", "--type", f"{p}.a", "--start",
                       "earliest")
    assert rc == 0 and "exists already" in out, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "create", p, q)
    assert rc == 1 and "409" in err, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "create", unique_name("clis"), "no-such-queue")
    assert rc == 1 and "404" in err, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "create", p, q, "--start", "whenever")
    assert rc == 2 and "400" in err, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "create", p, q, "--colour", "red")
    assert rc == 2, (rc, out, err)
    # The subscription routes events into the queue.
    ev = client.put_event({"id": f"{p}-1", "type": f"{p}.a", "tags": ["eu"]}).json()
    client.collect_events(q, [ev["id"]])
    mine = None

    def listed():
        nonlocal mine
        rc, out, err = run(server, "subscriptions", "list")
        assert rc == 0, (rc, out, err)
        mine = [line.split() for line in out.splitlines() if line.split()[0] == p]
        return mine and int(mine[0][4]) >= 1

    await_until(listed, timeout=30, desc="the CLI's list to show one delivered")
    assert mine[0][1:3] == [q, "active"], mine
    rc, out, err = run(server, "subscriptions", "list", "--json")
    assert rc == 0 and p in [s["subscriptionName"] for s in json.loads(out)["subscriptions"]], (rc, out, err)
    rc, out, err = run(server, "subscriptions", "delete", p)
    assert rc == 0, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "delete", p)
    assert rc == 1 and "404" in err, (rc, out, err)
    rc, out, err = run(server, "subscriptions", "delete", "bad/name")
    assert rc == 2, (rc, out, err)
