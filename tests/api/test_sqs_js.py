"""The AWS SDK for JavaScript v3 (@aws-sdk/client-sqs, which checks the MD5
digests of what it sends and receives) and sqs-consumer from npm against
Sluice, on both backends: a consumer processes 1,000 messages, a few slowly
enough that its heartbeat extends their visibility before it deletes them;
none is lost, none handled twice, every delete lands. The packages live in
SLUICE_NODE_MODULES (scripts/deps.sh installs them there, outside the
repository)."""

import json
import os
import subprocess

import pytest

from sluice_client import unique_name

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.environ.get("SLUICE_NODE_MODULES",
                              os.path.expanduser("~/.cache/sluice-node/node_modules"))


def test_sqs_consumer_processes_every_message_once(server, tmp_path):
    if not os.path.isdir(os.path.join(NODE_MODULES, "sqs-consumer")):
        pytest.fail(f"sqs-consumer is not installed in {NODE_MODULES}: run scripts/deps.sh --test")
    # ESM resolves packages from the script's own folder upwards, so the
    # script runs from a folder beside the installed node_modules.
    script = os.path.join(os.path.dirname(NODE_MODULES), "sluice_sqs_consumer.mjs")
    with open(os.path.join(HERE, "js", "sqs_consumer.mjs")) as src, open(script, "w") as dst:
        dst.write(src.read())
    p = subprocess.run(["node", script, server.base_url, "dev", server.key, unique_name("js"), "1000"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["errors"] == [], r
    assert r["sent"] == 1000 and r["handled"] == 1000, r
    assert (r["twice"], r["unknown"], r["left"]) == (0, 0, 0), r
    assert r["slow"] == 10, r
    calls = r["calls"]
    # The slow ones were extended by the heartbeat, then deleted with the
    # handle they were received with; nothing failed.
    assert calls.get("ChangeMessageVisibilityCommand", 0) >= 10, calls
    assert not [k for k in calls if k.endswith("failed")], calls
