"""A framework that sits on SQS: a real Celery worker (a subprocess, prefork
pool) with Celery's SQS broker transport (kombu's, boto3 for its calls and
pycurl for its long polls) pointed at Sluice runs 200 tasks, some of which
fail and are retried (self.retry with a 1 s countdown) before they succeed.

Celery stores no results here (no result backend): each task appends a line
to a ledger file in the test's directory: `attempt <i> <retries>` when it
starts and `done <i>` when it succeeds, so the test counts what really ran.
It asserts that every task ran each of its attempts exactly once (the
planned retries, no more, no fewer), that each succeeded exactly once, and
that afterwards the queue is empty through SQS itself (every message the
worker took was deleted). The broker's queue has a unique name prefix, so the
test is independent of the backend and of other tests.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse

import boto3
import botocore.config
import pytest

from sluice_client import await_until, unique_name

pytest.importorskip("celery", reason="Celery is installed by scripts/deps.sh --test")
pytest.importorskip("kombu.transport.SQS", reason="kombu[sqs] is installed by scripts/deps.sh --test")

N_TASKS = 200
RETRY_COUNTDOWN = 1  # seconds


def planned_failures(i):
    """How many times task i raises before it succeeds: 0, 1 or 2."""
    return 2 if i % 20 == 0 else 1 if i % 5 == 0 else 0


TASKS_MODULE = textwrap.dedent('''
    """Tasks of tests/api/test_sqs_celery.py; configured from the environment."""
    import os

    from celery import Celery

    app = Celery("sluice_celery_test")
    app.conf.update(
        broker_url=os.environ["SLUICE_CELERY_BROKER"],
        broker_transport_options={
            "region": "us-east-1",
            "is_secure": False,  # the endpoint is http://host:port of the URL
            "queue_name_prefix": os.environ["SLUICE_CELERY_PREFIX"],
            "wait_time_seconds": 2,  # long polls of 2 s
            "polling_interval": 0.2,
            # No retries by botocore: an error of the server fails the run
            # instead of being hidden (and a retried send could double a task).
            "client-config": {"retries": {"total_max_attempts": 1}},
        },
        broker_connection_retry_on_startup=True,
        task_default_queue="tasks",
        # SQS has no fanout: no remote control, no events.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_prefetch_multiplier=4,
        task_serializer="json",
        accept_content=["json"],
    )

    LEDGER = os.environ["SLUICE_CELERY_LEDGER"]


    def _note(line):
        # One write of one short line to a file opened O_APPEND: the lines of
        # the pool's processes never interleave.
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    @app.task(bind=True, name="sluice.work", max_retries=5)
    def work(self, i, fail_times, countdown):
        _note(f"attempt {i} {self.request.retries} {os.getpid()}")
        if self.request.retries < fail_times:
            raise self.retry(exc=RuntimeError(f"planned failure {self.request.retries + 1} of task {i}"),
                             countdown=countdown)
        _note(f"done {i}")
        return i
''')


def read_ledger(path):
    try:
        with open(path) as f:
            return [ln.split() for ln in f.read().splitlines() if ln]
    except FileNotFoundError:
        return []


def test_celery_worker_runs_200_tasks_with_retries(server, tmp_path):
    prefix = unique_name("celery") + "-"
    ledger = tmp_path / "ledger.txt"
    (tmp_path / "sluice_celery_tasks.py").write_text(TASKS_MODULE)
    host = server.host if server.host not in (None, "0.0.0.0", "::", "[::]", "*") else "127.0.0.1"
    broker = f"sqs://dev:{urllib.parse.quote(server.key, safe='')}@{host}:{server.port}"
    env = dict(os.environ, SLUICE_CELERY_BROKER=broker, SLUICE_CELERY_PREFIX=prefix,
               SLUICE_CELERY_LEDGER=str(ledger), PYTHONPATH=str(tmp_path))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        env.pop(k, None)
    log_path = tmp_path / "worker.log"
    sqs = boto3.client("sqs", endpoint_url=server.base_url, region_name="us-east-1",
                       aws_access_key_id="dev", aws_secret_access_key=server.key,
                       config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=30))

    def worker_log(n=60):
        try:
            return "\n".join(log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "<no worker log>"

    # The producer: the same app in this process (Celery's publishing path
    # over the same transport: kombu creates the queue, then SendMessage).
    sys.path.insert(0, str(tmp_path))
    old_env = {k: os.environ.get(k) for k in ("SLUICE_CELERY_BROKER", "SLUICE_CELERY_PREFIX", "SLUICE_CELERY_LEDGER")}
    os.environ.update(SLUICE_CELERY_BROKER=broker, SLUICE_CELERY_PREFIX=prefix, SLUICE_CELERY_LEDGER=str(ledger))
    worker = None
    try:
        import sluice_celery_tasks as tasks

        t0 = time.monotonic()
        expected = {i: planned_failures(i) for i in range(N_TASKS)}
        for i, fails in expected.items():
            tasks.work.apply_async(args=(i, fails, RETRY_COUNTDOWN))
        t_sent = time.monotonic() - t0
        qurl = sqs.get_queue_url(QueueName=prefix + "tasks")["QueueUrl"]
        await_until(lambda: sqs.get_queue_attributes(QueueUrl=qurl, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"] == str(N_TASKS), timeout=15, interval=0.2,
                    desc=f"the queue to count the {N_TASKS} tasks sent")

        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "sluice_celery_tasks", "worker", "--loglevel=INFO",
                 "--pool=prefork", "--concurrency=4", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-n", f"w-{prefix}@%h"],
                cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its pool processes share its process group, stopped by its id
            )
        t1 = time.monotonic()

        def all_done():
            assert worker.poll() is None, f"the worker exited with {worker.returncode}:\n{worker_log()}"
            return sum(1 for ln in read_ledger(ledger) if ln[0] == "done") >= N_TASKS

        try:
            await_until(all_done, timeout=90, interval=0.2, desc=f"{N_TASKS} tasks done")
        except AssertionError as e:
            raise AssertionError(f"{e}\nworker log:\n{worker_log()}") from None
        t_done = time.monotonic() - t1

        # Everything the worker took was deleted: the queue ends empty
        # (no message in flight, none visible, none delayed).
        def empty():
            a = sqs.get_queue_attributes(QueueUrl=qurl, AttributeNames=["All"])["Attributes"]
            n = (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"],
                 a["ApproximateNumberOfMessagesDelayed"])
            return n == ("0", "0", "0") or None

        await_until(empty, timeout=30, interval=0.2, desc="the tasks queue empty through SQS")

        lines = read_ledger(ledger)
        attempts, done, pids = {}, {}, set()
        for ln in lines:
            if ln[0] == "attempt":
                i, r = int(ln[1]), int(ln[2])
                attempts.setdefault(i, []).append(r)
                pids.add(ln[3])
            elif ln[0] == "done":
                done[int(ln[1])] = done.get(int(ln[1]), 0) + 1
        strangers = set(attempts) - set(expected)
        assert not strangers, f"tasks that were never sent ran: {sorted(strangers)[:5]}"
        lost = [i for i in expected if i not in done]
        assert not lost, f"{len(lost)} tasks never succeeded, e.g. {lost[:5]}\n{worker_log()}"
        twice = {i: n for i, n in done.items() if n != 1}
        assert not twice, f"{len(twice)} tasks succeeded more than once, e.g. {list(twice.items())[:5]}"
        wrong = {i: sorted(attempts.get(i, [])) for i, f in expected.items()
                 if sorted(attempts.get(i, [])) != list(range(f + 1))}
        assert not wrong, ("tasks whose attempts (their retry numbers) are not exactly the planned ones, "
                           f"e.g. {list(wrong.items())[:5]}")
        n_retries = sum(len(v) - 1 for v in attempts.values())
        assert n_retries == sum(expected.values())
        print(f"celery: {N_TASKS} tasks sent in {t_sent:.1f} s, done in {t_done:.1f} s by {len(pids)} pool "
              f"processes, {n_retries} retries, {len(lines)} ledger lines")

        # The worker stops cleanly on SIGTERM (a warm shutdown: it deletes
        # nothing more and leaves nothing in flight).
        worker.send_signal(signal.SIGTERM)
        try:
            rc = worker.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not stop within 30 s of SIGTERM:\n{worker_log()}") from None
        assert rc == 0, f"the worker exited with {rc}:\n{worker_log()}"
        await_until(empty, timeout=10, interval=0.2, desc="the tasks queue still empty after the worker stopped")
    finally:
        if worker is not None:
            # The worker and its pool processes: the process group it leads
            # (start_new_session), which outlives the worker while any of
            # its children does.
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            worker.wait(10)
        if "sluice_celery_tasks" in sys.modules:
            sys.modules["sluice_celery_tasks"].app.close()
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sluice_celery_tasks", None)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
