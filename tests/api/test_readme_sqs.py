"""The README's SQS examples (boto3, the AWS CLI, the JavaScript SDK) run as
printed, each against a fresh server (as against a fresh `sluice dev`),
only the port changed from 8080 to the test server's, so that the README
stays true."""

import os
import re
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")
NODE_MODULES = os.environ.get("SLUICE_NODE_MODULES", os.path.expanduser("~/.cache/sluice-node/node_modules"))


def blocks():
    text = open(README).read()
    section = text.split("\n## SQS\n", 1)[1].split("\n## ", 1)[0]
    found = dict(re.findall(r"```(\w+)\n(.*?)```", section, re.S))
    assert set(found) >= {"python", "sh", "js"}, f"the README's SQS section lacks an example: {sorted(found)}"
    return found


@pytest.fixture
def server(server_factory):
    return server_factory("readme")


@pytest.fixture
def examples(server):
    return {lang: code.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}") for lang, code in blocks().items()}


def run(cmd, server, **kw):
    env = dict(os.environ, KEY=server.key)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        env.pop(k, None)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kw)
    assert p.returncode == 0, f"{cmd[0]} failed:\n{p.stdout}\n{p.stderr[-3000:]}"
    return p.stdout


def test_readme_boto3(server, examples):
    out = run(["python3", "-c", examples["python"]], server)
    assert "hello {'kind': {'StringValue': 'greeting', 'DataType': 'String'}}" in out, out


def test_readme_aws_cli(server, examples):
    out = run(["bash", "-euc", examples["sh"]], server)
    assert '"Body": "hi"' in out, out


def test_readme_js(server, examples):
    if not os.path.isdir(os.path.join(NODE_MODULES, "@aws-sdk", "client-sqs")):
        pytest.fail(f"@aws-sdk/client-sqs is not installed in {NODE_MODULES}: run scripts/deps.sh --test")
    script = os.path.join(os.path.dirname(NODE_MODULES), "sluice_readme_demo.mjs")
    with open(script, "w") as f:
        f.write(examples["js"])
    out = run(["node", script], server)
    assert "hello from js" in out, out
