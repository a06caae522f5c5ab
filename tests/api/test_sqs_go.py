"""The AWS SDK for Go v2 (github.com/aws/aws-sdk-go-v2/service/sqs, which
checks the MD5 digests of what it sends and receives) against Sluice, on
both backends: create, send with attributes, receive, delete, and a
missing queue as the SDK's typed QueueDoesNotExist error. The program is
tests/api/go/sqs_smoke; it is built into SLUICE_GO_BIN (a cache outside the
repository; scripts/deps.sh fetches its modules)."""

import json
import os
import subprocess

from sluice_client import unique_name

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("SLUICE_GO_BIN", os.path.expanduser("~/.cache/sluice-go/sqs_smoke"))


def test_go_sdk_send_receive_delete(server):
    b = subprocess.run(["go", "build", "-o", BIN, "."], cwd=os.path.join(HERE, "go", "sqs_smoke"),
                       capture_output=True, text=True, timeout=600)
    assert b.returncode == 0, b.stderr[-3000:]
    name = unique_name("go")
    p = subprocess.run([BIN, server.base_url, "dev", server.key, name], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["received"] == 1 and r["id"] == r["sent"], r
    assert (r["body"], r["lang"]) == ("from go ☂", "go"), r
    assert r["raw"] == "AAEC/w==", r  # Go marshals []byte{0, 1, 2, 255} as base64
    assert r["missing_is_QueueDoesNotExist"] is True, r
    c = server.client()
    try:
        assert c.stats_json(name)["size"] == 0  # the delete landed
    finally:
        c.close()
