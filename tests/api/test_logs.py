"""Structured logs (--log-format json, LOGSTASH_CUSTOM_APP_NAME): every line
the server writes to stderr is one JSON object with the time, the level, the
app and the message; a request's line (debug level) names its request id
(the one the client got in X-Request-Id and in error bodies), method, route
pattern, account, queue, status and latency. Text stays the default."""

import json
import re

from sluice_client import await_until, unique_name


def stderr_lines(srv):
    """The server's stderr lines of its first run (srv.lines holds both
    streams, prefixed; the banner is stdout)."""
    prefix = f"[{srv.name} run 1] "
    with srv._lock:
        both = [line[len(prefix):] for line in srv.lines if line.startswith(prefix)]
        out = list(srv.stdout_lines)
    for line in out:  # each stdout line once
        if line in both:
            both.remove(line)
    return both


def records(srv):
    recs = []
    for line in stderr_lines(srv):
        rec = json.loads(line)  # every line is one JSON object
        assert isinstance(rec, dict), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), line
        assert rec["level"] in ("error", "info", "debug"), line
        assert rec["app"] == "shop-queue", line
        assert isinstance(rec["message"], str), line
        recs.append(rec)
    return recs


def test_json_log_lines(server_factory):
    srv = server_factory("jsonlogs", env={"SLUICE_LOG_FORMAT": "json", "SLUICE_LOG_LEVEL": "debug",
                                          "LOGSTASH_CUSTOM_APP_NAME": "shop-queue"})
    c = srv.client()
    q = unique_name("l")
    assert c.create_queue(q).status_code == 201
    put = c.put(q, "hello")
    assert put.status_code == 201
    rid = put.headers["X-Request-Id"]
    bad = c.request("GET", c.qpath(q, "/messages/peek"), params={"count": "many"})
    assert bad.status_code == 400
    bad_id = bad.headers["X-Request-Id"]
    assert bad.json()["error"]["requestId"] == bad_id

    def request_line(request_id):
        return next((r for r in records(srv) if r.get("requestId") == request_id and r["message"] == "request"),
                    None)
    line = await_until(lambda: request_line(rid), desc="the put's request line")
    assert line["level"] == "debug"
    assert line["method"] == "POST"
    assert line["route"] == "/api/v1/accounts/{account}/queues/{q}/messages"
    assert (line["account"], line["queue"]) == ("dev", q)
    assert line["path"] == f"/api/v1/accounts/dev/queues/{q}/messages"
    assert line["status"] == 201
    assert isinstance(line["latencyMs"], float) and line["latencyMs"] >= 0
    line = await_until(lambda: request_line(bad_id), desc="the bad peek's request line")
    assert line["status"] == 400 and line["queue"] == q
    # Lines from startup and shutdown are objects too.
    srv.stop()
    recs = records(srv)
    assert any("listening on" in r["message"] for r in recs)
    assert recs[-1]["message"] == "stopped"


def test_text_logs_are_the_default(server_factory):
    srv = server_factory("textlogs")
    lines = stderr_lines(srv)
    assert any(re.match(r"\d{4}-\d\d-\d\dT\S+Z info .*listening on", line) for line in lines), lines
    assert not any(line.startswith("{") for line in lines)


def test_a_bad_log_format_is_refused(tmp_path):
    import subprocess
    from sluice_client import BINARY
    r = subprocess.run([BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", str(tmp_path / "d"),
                        "--log-format", "xml"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "log_format" in r.stderr
