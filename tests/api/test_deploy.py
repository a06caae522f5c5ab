"""Packaging (deploy/): the sample configuration starts `sluice serve`, the
systemd unit passes `systemd-analyze verify`, and the container image is
built from deploy/Dockerfile with podman and run: it serves, runs as a
non-root user, keeps its messages in its volume across a restart, and
stops cleanly on SIGTERM.

Podman here: the base image cannot be pulled (no registry is reachable), so
debian:bookworm-slim is made with mmdebstrap from the Debian mirror and
imported, unless the machine has one; and this sandbox lacks
CAP_SYS_RESOURCE, so containers run under runc with lowered rlimits
(crun refuses the hybrid cgroup layout). scripts/deps.sh --test installs
podman, runc and mmdebstrap."""

import os
import re
import shutil
import signal
import subprocess
import time
import uuid

import pytest
import requests

from sluice_client import BINARY, await_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
TOKEN = "deploy-test-token-" + uuid.uuid4().hex


def serve(args, env, timeout=30):
    """Starts the binary with args; returns (proc, port, admin_port)."""
    p = subprocess.Popen([BINARY] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = admin = None
    deadline = time.monotonic() + timeout
    out = []
    while (port is None or admin is None) and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line)
        m = re.search(r"listening on https?://[^ ]*:(\d+)", line)
        if m and "admin" in line:
            admin = int(m.group(1))
        elif m:
            port = int(m.group(1))
    assert port and admin, "".join(out)
    return p, port, admin


def test_the_sample_config_serves(tmp_path):
    conf = os.path.join(DEPLOY, "sluice.conf")
    # Without an admin token (the sample leaves it to the environment), serve refuses.
    r = subprocess.run([BINARY, "serve", "--config", conf, "--data", str(tmp_path / "d")],
                       env={k: v for k, v in os.environ.items() if k != "SLUICE_ADMIN_TOKEN"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "admin token" in r.stderr
    env = dict(os.environ, SLUICE_ADMIN_TOKEN=TOKEN)
    env.pop("CONTACT_POINTS", None)
    p, port, admin = serve(["serve", "--config", conf, "--data", str(tmp_path / "d"), "--port", "0",
                            "--admin-port", "0", "--host", "127.0.0.1"], env)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json() == {"status": "ok"}
        r = requests.get(f"http://127.0.0.1:{admin}/admin/api/v1/accounts",
                         headers={"Authorization": "Bearer " + TOKEN}, timeout=10)
        assert r.status_code == 200
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0


def test_the_systemd_unit_verifies(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (Debian's systemd package)"
    text = open(os.path.join(DEPLOY, "sluice.service")).read()
    assert "ExecStart=/usr/local/bin/sluice serve --config /etc/sluice/sluice.conf\n" in text
    # The unit as installed, but with this build's binary (verify checks it is executable).
    unit = tmp_path / "sluice.service"
    unit.write_text(text.replace("/usr/local/bin/sluice", BINARY))
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in r.stderr.splitlines() if "sluice.service" in line]
    assert r.returncode == 0 and not ours, r.stderr


# --- The container image --------------------------------------------------------

RUN_OPTS = ["--runtime", "/usr/sbin/runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def podman(*args, timeout=120, check=True):
    r = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"podman {' '.join(args)}: {r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def image():
    for tool in ("podman", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/deps.sh --test"
    assert os.path.exists("/usr/sbin/runc"), "runc is missing: run scripts/deps.sh --test"
    base = "docker.io/library/debian:bookworm-slim"
    if podman("image", "exists", base, check=False).returncode != 0:
        mm = subprocess.Popen(["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", "-",
                               "http://deb.debian.org/debian"], stdout=subprocess.PIPE)
        imp = subprocess.run(["podman", "import", "-", base], stdin=mm.stdout, capture_output=True, text=True,
                             timeout=600)
        mm.stdout.close()
        assert mm.wait(timeout=60) == 0 and imp.returncode == 0, imp.stderr
    tag = "localhost/sluice-test:" + uuid.uuid4().hex[:12]
    podman("build", "--network=host", *RUN_OPTS, "-f", os.path.join(DEPLOY, "Dockerfile"), "-t", tag, ROOT,
           timeout=1200)
    yield tag
    podman("rmi", "-f", tag, check=False)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.backend("sqlite", reason="the image is tested once, on its default embedded store")
def test_the_container_image(image):
    port, admin = free_port(), free_port()
    volume = "sluice-test-" + uuid.uuid4().hex[:12]

    def start():
        r = podman("run", "-d", "--network=host", *RUN_OPTS, "-v", f"{volume}:/var/lib/sluice",
                   "-e", f"SLUICE_PORT={port}", "-e", f"SLUICE_ADMIN_PORT={admin}", "-e", "SLUICE_HOST=127.0.0.1",
                   "-e", "SLUICE_ADMIN_HOST=127.0.0.1", "-e", f"SLUICE_ADMIN_TOKEN={TOKEN}", image)
        cid = r.stdout.strip()

        def up():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        await_until(up, timeout=60, interval=0.2, desc="the container's /health")
        return cid

    cid = start()
    try:
        assert podman("exec", cid, "id", "-un").stdout.strip() == "sluice"  # not root
        adm = {"Authorization": "Bearer " + TOKEN}
        r = requests.post(f"http://127.0.0.1:{admin}/admin/api/v1/accounts", json={"accountName": "shop"},
                          headers=adm, timeout=10)
        assert r.status_code == 201, r.text
        key = r.json()["keys"]["primary"]
        h = {"Authorization": "Key " + key}
        base = f"http://127.0.0.1:{port}/api/v1/accounts/shop/queues"
        assert requests.post(base, json={"queueName": "orders"}, headers=h, timeout=10).status_code == 201
        assert requests.post(base + "/orders/messages", data="kept", headers=h, timeout=10).status_code == 201
        # SIGTERM (podman stop) ends it cleanly; the volume keeps the message.
        podman("stop", "-t", "30", cid, timeout=60)
        logs = podman("logs", cid).stderr + podman("logs", cid).stdout
        assert "stopped" in logs, logs[-2000:]
        podman("rm", cid)
        cid = start()
        r = requests.post(base + "/orders/messages/receive", json={"maxMessages": 1}, headers=h, timeout=10)
        assert [m["message"] for m in r.json()["messages"]] == ["kept"]
    finally:
        podman("rm", "-f", cid, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def test_the_compose_file_names_real_commands_and_settings():
    """compose.yaml is not run here (Docker Hub's cassandra image cannot be
    pulled); what can be checked without it: it is valid YAML, its commands
    are the binary's, and every environment variable it sets is a setting
    of `sluice help config`."""
    import yaml
    doc = yaml.safe_load(open(os.path.join(DEPLOY, "compose.yaml")))
    settings = subprocess.run([BINARY, "help", "config"], capture_output=True, text=True, timeout=30).stdout
    usage = subprocess.run([BINARY, "help"], capture_output=True, text=True, timeout=30).stdout
    for name in ("schema", "sluice"):
        svc = doc["services"][name]
        assert svc["image"] == "sluice"
        assert f"sluice {svc['command'][0]}" in usage
        for var in svc["environment"]:
            assert f"`{var}`" in settings, var
    assert doc["services"]["schema"]["command"] == ["schema", "--create-keyspace"]
    assert doc["services"]["schema"]["build"]["dockerfile"] == "deploy/Dockerfile"
