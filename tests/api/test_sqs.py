"""The SQS JSON protocol (API.md "SQS wire protocol") through boto3 from
PyPI, the client most SQS code runs on, on both backends: queues and their
attributes, messages with typed attributes and AWS's MD5 digests (computed
here independently), visibility and receipt handles as SQS has them, long
polling, dead-letter queues by RedrivePolicy, batches with per-entry
failures, AWS's error codes, and one queue seen through both APIs."""

import hashlib
import threading
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from sluice_client import await_until, unique_name
from sqs_md5 import md5, md5_attrs


def make_client(server, account="dev", key=None, region="eu-west-3"):
    return boto3.client("sqs", endpoint_url=server.base_url, region_name=region,
                        aws_access_key_id=account, aws_secret_access_key=key or server.key,
                        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=40))


@pytest.fixture(scope="module")
def sqs(server):
    return make_client(server)


def new_queue(sqs, prefix="q", **attrs):
    name = unique_name(prefix)
    url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attrs.items()})["QueueUrl"]
    return name, url


def error_of(fn, **kw):
    """Calls fn expecting an error; returns (code, HTTP status, message)."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(**kw)
    err = e.value.response["Error"]
    return err["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"], err.get("Message", "")


def counts(sqs, url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"]),
            int(a["ApproximateNumberOfMessagesDelayed"]))


def receive_one(sqs, url, **kw):
    r = sqs.receive_message(QueueUrl=url, **kw)
    msgs = r.get("Messages", [])
    assert len(msgs) <= 1, msgs
    return msgs[0] if msgs else None


# --- Queues -----------------------------------------------------------------


def test_queue_lifecycle(server, sqs):
    name, url = new_queue(sqs, "life", VisibilityTimeout=45, DelaySeconds=2, MessageRetentionPeriod=3600,
                          ReceiveMessageWaitTimeSeconds=3, MaximumMessageSize=2048)
    assert url == f"{server.base_url}/dev/{name}"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["VisibilityTimeout"] == "45"
    assert a["DelaySeconds"] == "2"
    assert a["MessageRetentionPeriod"] == "3600"
    assert a["ReceiveMessageWaitTimeSeconds"] == "3"
    assert a["MaximumMessageSize"] == "2048"
    assert a["QueueArn"] == f"arn:aws:sqs:eu-west-3:dev:{name}"
    assert abs(int(a["CreatedTimestamp"]) - time.time()) < 600
    assert (a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
    # Only what was asked for; nothing when nothing was.
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "QueueArn"])
    assert set(only["Attributes"]) == {"VisibilityTimeout", "QueueArn"}
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url)
    # Creating it again with the same attributes is the same queue; with
    # others, an error.
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    code, status, _ = error_of(sqs.create_queue, QueueName=name, Attributes={"VisibilityTimeout": "46"})
    assert (code, status) == ("QueueAlreadyExists", 400)
    # The native API sees the same queue.
    c = server.client()
    try:
        assert c.get_queue(name).status_code == 200
    finally:
        c.close()
    sqs.delete_queue(QueueUrl=url)
    code, status, _ = error_of(sqs.get_queue_url, QueueName=name)
    assert (code, status) == ("AWS.SimpleQueueService.NonExistentQueue", 400)
    code, _, _ = error_of(sqs.send_message, QueueUrl=url, MessageBody="x")
    assert code == "AWS.SimpleQueueService.NonExistentQueue"


def test_list_queues_prefix_and_pages(sqs):
    prefix = unique_name("lst")
    urls = [sqs.create_queue(QueueName=f"{prefix}-{i}")["QueueUrl"] for i in range(5)]
    assert sorted(sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]) == sorted(urls)
    got, token = [], None
    while True:
        kw = {"QueueNamePrefix": prefix, "MaxResults": 2}
        if token:
            kw["NextToken"] = token
        page = sqs.list_queues(**kw)
        assert len(page.get("QueueUrls", [])) <= 2
        got += page.get("QueueUrls", [])
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(got) == sorted(urls)
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix=unique_name("none"))


def test_queue_attribute_errors(sqs):
    name = unique_name("bad")
    for attrs, code in [({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
                        ({"DelaySeconds": "-1"}, "InvalidAttributeValue"),
                        ({"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
                        ({"MessageRetentionPeriod": "59"}, "InvalidAttributeValue"),
                        ({"NoSuchAttribute": "1"}, "InvalidAttributeName"),
                        ({"RedrivePolicy": "{\"maxReceiveCount\": 3}"}, "InvalidAttributeValue"),
                        ({"RedrivePolicy": "{\"deadLetterTargetArn\": \"arn:aws:sqs:r:dev:nosuchqueue\", "
                                           "\"maxReceiveCount\": 3}"}, "InvalidAttributeValue")]:
        c, status, _ = error_of(sqs.create_queue, QueueName=name, Attributes=attrs)
        assert (c, status) == (code, 400), attrs
    for bad in ["has space", "dot.ted", "x" * 81, ""]:
        c, status, _ = error_of(sqs.create_queue, QueueName=bad)
        assert status == 400, bad
    # Nothing was created by any of them.
    code, _, _ = error_of(sqs.get_queue_url, QueueName=name)
    assert code == "AWS.SimpleQueueService.NonExistentQueue"
    _, url = new_queue(sqs, "attrs")
    c, status, _ = error_of(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["NoSuch"])
    assert (c, status) == ("InvalidAttributeName", 400)


# --- Messages ---------------------------------------------------------------


def test_send_receive_delete_with_attributes_and_digests(sqs):
    _, url = new_queue(sqs, "msg")
    attrs = {"color": {"DataType": "String", "StringValue": "blue ☂"},
             "count": {"DataType": "Number", "StringValue": "-12.5e3"},
             "blob": {"DataType": "Binary", "BinaryValue": bytes(range(7))},
             "kind": {"DataType": "String.custom", "StringValue": "x"}}
    body = "héllo \U0001F600 <xml/> & tab\t"
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    r = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs,
                         MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    assert r["MD5OfMessageBody"] == md5(body)
    assert r["MD5OfMessageAttributes"] == md5_attrs(attrs)
    assert r["MD5OfMessageSystemAttributes"] == md5_attrs(
        {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    sent = time.time() * 1000
    m = receive_one(sqs, url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    assert m["MessageId"] == r["MessageId"]
    assert m["Body"] == body
    assert m["MD5OfBody"] == md5(body)
    assert m["MessageAttributes"] == attrs
    assert m["MD5OfMessageAttributes"] == md5_attrs(attrs)
    a = m["Attributes"]
    assert a["ApproximateReceiveCount"] == "1"
    assert a["SenderId"] == "dev"
    assert a["AWSTraceHeader"] == trace
    assert abs(int(a["SentTimestamp"]) - sent) < 60000
    assert int(a["SentTimestamp"]) <= int(a["ApproximateFirstReceiveTimestamp"])
    assert counts(sqs, url)[:2] == (0, 1)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert counts(sqs, url) == (0, 0, 0)
    # Deleting again with the same handle succeeds and does nothing, as in SQS.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_message_attribute_selection(sqs):
    _, url = new_queue(sqs, "sel")
    attrs = {"app.a": {"DataType": "String", "StringValue": "1"},
             "app.b": {"DataType": "Number", "StringValue": "2"},
             "other": {"DataType": "String", "StringValue": "3"}}
    for _ in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes=attrs)
    m = receive_one(sqs, url)
    assert "MessageAttributes" not in m and "MD5OfMessageAttributes" not in m and "Attributes" not in m
    m = receive_one(sqs, url, MessageAttributeNames=["app.*"], AttributeNames=["SentTimestamp"])
    want = {k: v for k, v in attrs.items() if k.startswith("app.")}
    assert m["MessageAttributes"] == want
    assert m["MD5OfMessageAttributes"] == md5_attrs(want)
    assert set(m["Attributes"]) == {"SentTimestamp"}
    m = receive_one(sqs, url, MessageAttributeNames=["other", "missing"])
    assert m["MessageAttributes"] == {"other": attrs["other"]}


def test_message_errors(sqs):
    _, url = new_queue(sqs, "merr", MaximumMessageSize=1024)
    cases = [
        (dict(MessageBody="bad \x01 char"), "InvalidMessageContents"),
        (dict(MessageBody=""), "MissingParameter"),
        (dict(MessageBody="x" * 1025), "InvalidParameterValue"),
        (dict(MessageBody="x", DelaySeconds=901), "InvalidParameterValue"),
        (dict(MessageBody="x", MessageAttributes={"AWS.x": {"DataType": "String", "StringValue": "1"}}),
         "InvalidParameterValue"),
        (dict(MessageBody="x", MessageAttributes={"n": {"DataType": "Number", "StringValue": "twelve"}}),
         "InvalidParameterValue"),
        (dict(MessageBody="x", MessageAttributes={"n": {"DataType": "Date", "StringValue": "1"}}),
         "InvalidParameterValue"),
        (dict(MessageBody="x", MessageAttributes={f"k{i}": {"DataType": "String", "StringValue": "v"}
                                                  for i in range(11)}), "InvalidParameterValue"),
        (dict(MessageBody="x" * 1000, MessageAttributes={"k": {"DataType": "String", "StringValue": "v" * 30}}),
         "InvalidParameterValue"),
    ]
    for kw, code in cases:
        c, status, msg = error_of(sqs.send_message, QueueUrl=url, **kw)
        assert (c, status) == (code, 400), (kw, c, msg)
    assert counts(sqs, url) == (0, 0, 0)  # nothing half-sent
    c, status, _ = error_of(sqs.delete_message, QueueUrl=url, ReceiptHandle="not-a-handle")
    assert (c, status) == ("ReceiptHandleIsInvalid", 404)
    c, status, _ = error_of(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle="not-a-handle",
                            VisibilityTimeout=5)
    assert (c, status) == ("ReceiptHandleIsInvalid", 404)
    c, status, _ = error_of(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=11)
    assert (c, status) == ("InvalidParameterValue", 400)


def test_delay_queue_and_per_message_delay(sqs):
    _, url = new_queue(sqs, "delay", DelaySeconds=900)
    sqs.send_message(QueueUrl=url, MessageBody="waits")  # the queue's delay
    sqs.send_message(QueueUrl=url, MessageBody="now", DelaySeconds=0)
    m = receive_one(sqs, url, WaitTimeSeconds=1)
    assert m["Body"] == "now"
    assert receive_one(sqs, url) is None
    assert await_until(lambda: counts(sqs, url)[2] == 1, desc="one delayed message")


# --- Visibility and receipt handles ----------------------------------------


def test_visibility_expiry_redelivers_and_old_handle_deletes_nothing(sqs):
    _, url = new_queue(sqs, "vis")
    sqs.send_message(QueueUrl=url, MessageBody="again")
    names = ["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"]
    before = int(time.time() * 1000)
    first = receive_one(sqs, url, VisibilityTimeout=1, AttributeNames=names)
    after = int(time.time() * 1000)
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    # The first delivery's time, kept through the next deliveries (the
    # server's clock is this machine's; a millisecond of rounding allowed).
    assert before - 1 <= int(first["Attributes"]["ApproximateFirstReceiveTimestamp"]) <= after + 1
    second = await_until(lambda: receive_one(sqs, url, VisibilityTimeout=30, AttributeNames=names),
                         desc="the redelivery after the visibility timeout")
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert (second["Attributes"]["ApproximateFirstReceiveTimestamp"]
            == first["Attributes"]["ApproximateFirstReceiveTimestamp"])
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    # The first delivery's handle deletes nothing (AWS: the request
    # succeeds, the message is not deleted) and changes nothing.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    c, status, _ = error_of(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=first["ReceiptHandle"],
                            VisibilityTimeout=0)
    assert (c, status) == ("AWS.SimpleQueueService.MessageNotInflight", 400)
    assert counts(sqs, url)[:2] == (0, 1)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert counts(sqs, url) == (0, 0, 0)


def test_change_visibility_keeps_the_handle(sqs):
    """SQS keeps a receipt handle valid through ChangeMessageVisibility
    (sqs-consumer and Celery extend a lease, then delete with the handle
    they received); Sluice's native receipts change on update, so SQS gets
    the engine's sticky receipts."""
    _, url = new_queue(sqs, "chg")
    sqs.send_message(QueueUrl=url, MessageBody="work")
    m = receive_one(sqs, url, VisibilityTimeout=30)
    h = m["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=h, VisibilityTimeout=60)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=h, VisibilityTimeout=120)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=h)
    assert counts(sqs, url) == (0, 0, 0)
    # Visibility 0 returns a message at once.
    sqs.send_message(QueueUrl=url, MessageBody="back")
    m = receive_one(sqs, url, VisibilityTimeout=300)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    again = await_until(lambda: receive_one(sqs, url, AttributeNames=["ApproximateReceiveCount"]),
                        desc="the message returned by visibility 0")
    assert again["MessageId"] == m["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_queue_visibility_timeout_is_the_default_lease(sqs):
    _, url = new_queue(sqs, "vdef", VisibilityTimeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="x")
    first = receive_one(sqs, url)
    again = await_until(lambda: receive_one(sqs, url, VisibilityTimeout=60),
                        desc="redelivery after the queue's 1 s visibility timeout")
    assert again["MessageId"] == first["MessageId"]


def test_long_poll_returns_when_a_message_arrives(server, sqs):
    _, url = new_queue(sqs, "poll")
    got = {}
    started = threading.Event()

    def poll():
        c = make_client(server)
        started.set()
        got["r"] = c.receive_message(QueueUrl=url, WaitTimeSeconds=20)
        got["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    started.wait()
    time.sleep(0.5)  # the poll is waiting (the condition is the passing of time)
    sent = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="wake")
    t.join(30)
    assert not t.is_alive()
    assert [m["Body"] for m in got["r"].get("Messages", [])] == ["wake"]
    assert got["at"] - sent < 15, "the long poll waited for its deadline instead of answering the put"


def test_queue_wait_time_is_the_default_long_poll(server, sqs):
    _, url = new_queue(sqs, "qwait", ReceiveMessageWaitTimeSeconds=20)
    got = {}

    def poll():
        got["r"] = make_client(server).receive_message(QueueUrl=url)

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(1.0)  # the condition is the passing of time: the poll must still be waiting
    assert t.is_alive(), "ReceiveMessageWaitTimeSeconds=20 did not make the receive wait"
    sqs.send_message(QueueUrl=url, MessageBody="x")
    t.join(30)
    assert [m["Body"] for m in got["r"]["Messages"]] == ["x"]


# --- Dead-letter queues -----------------------------------------------------


def test_redrive_policy_moves_to_the_dlq(sqs):
    _, dlq = new_queue(sqs, "dlq")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = '{"deadLetterTargetArn": "%s", "maxReceiveCount": "2"}' % arn
    _, src = new_queue(sqs, "src", RedrivePolicy=policy)
    a = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert a["RedrivePolicy"] == '{"deadLetterTargetArn":"%s","maxReceiveCount":2}' % arn
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    sqs.send_message(QueueUrl=src, MessageBody="poison",
                     MessageAttributes={"k": {"DataType": "Number", "StringValue": "7"}})
    assert receive_one(sqs, src, VisibilityTimeout=1)["Body"] == "poison"
    await_until(lambda: receive_one(sqs, src, VisibilityTimeout=1), desc="the second delivery")

    def in_dlq():
        m = receive_one(sqs, src, VisibilityTimeout=1)
        assert m is None, "delivered a third time despite maxReceiveCount 2"
        return receive_one(sqs, dlq, MessageAttributeNames=["All"])

    moved = await_until(in_dlq, timeout=20, desc="the message in the DLQ")
    assert moved["Body"] == "poison"
    assert moved["MessageAttributes"] == {"k": {"DataType": "Number", "StringValue": "7"}}


def arn_of(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def dlq_pair(sqs, n):
    """A queue and its DLQ, with n messages waiting in the DLQ."""
    _, dlq = new_queue(sqs, "mvdlq")
    policy = '{"deadLetterTargetArn": "%s", "maxReceiveCount": "3"}' % arn_of(sqs, dlq)
    _, src = new_queue(sqs, "mvsrc", RedrivePolicy=policy)
    for i in range(0, n, 10):
        r = sqs.send_message_batch(QueueUrl=dlq, Entries=[{"Id": str(k), "MessageBody": f"m{k}"}
                                                          for k in range(i, min(n, i + 10))])
        assert not r.get("Failed"), r
    return src, dlq


def drain(sqs, url):
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not msgs:
            return bodies
        bodies += [m["Body"] for m in msgs]


def test_message_move_task_redrives_to_the_source(sqs):
    src, dlq = dlq_pair(sqs, 30)
    src_arn, dlq_arn = arn_of(sqs, src), arn_of(sqs, dlq)
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=20)["TaskHandle"]
    (task,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert task["SourceArn"] == dlq_arn and task["DestinationArn"] == src_arn
    assert task["ApproximateNumberOfMessagesToMove"] == 30 and task["MaxNumberOfMessagesPerSecond"] == 20
    if task["Status"] == "RUNNING":
        assert task["TaskHandle"] == handle

    def done():
        (t,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        return t if t["Status"] == "COMPLETED" else None

    t = await_until(done, timeout=30, desc="the move task's completion")
    assert t["ApproximateNumberOfMessagesMoved"] == 30 and "TaskHandle" not in t
    assert sorted(drain(sqs, src)) == sorted(f"m{k}" for k in range(30))
    assert drain(sqs, dlq) == []
    # A finished task cannot be cancelled.
    assert error_of(sqs.cancel_message_move_task, TaskHandle=handle)[:2] == ("ResourceNotFoundException", 400)


def test_message_move_task_cancel_and_destination(sqs):
    src, dlq = dlq_pair(sqs, 40)
    dlq_arn = arn_of(sqs, dlq)
    _, other = new_queue(sqs, "mvother")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=arn_of(sqs, other),
                                         MaxNumberOfMessagesPerSecond=2)["TaskHandle"]
    # One task at a time on a queue.
    c, status, msg = error_of(sqs.start_message_move_task, SourceArn=dlq_arn)
    assert (c, status) == ("InvalidParameterValue", 400) and "already" in msg

    def moved_some():
        (t,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        return t["ApproximateNumberOfMessagesMoved"] >= 1

    await_until(moved_some, timeout=20, desc="the first messages moved")
    sqs.cancel_message_move_task(TaskHandle=handle)

    def cancelled():
        (t,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        return t if t["Status"] == "CANCELLED" else None

    t = await_until(cancelled, timeout=20, desc="the cancel")
    moved = drain(sqs, other)
    left = drain(sqs, dlq)
    # Stopped early, and every message is in exactly one of the two queues.
    assert 1 <= len(moved) < 40 and t["ApproximateNumberOfMessagesMoved"] == len(moved)
    assert sorted(moved + left) == sorted(f"m{k}" for k in range(40))
    assert drain(sqs, src) == []
    # A new task may start once the last one ended; the list is newest first.
    sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=arn_of(sqs, other))
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]
    assert len(tasks) == 2 and tasks[1]["Status"] == "CANCELLED"


def test_message_move_task_errors(sqs):
    _, plain = new_queue(sqs, "mvplain")
    plain_arn = arn_of(sqs, plain)
    c, _, msg = error_of(sqs.start_message_move_task, SourceArn=plain_arn)
    assert c == "InvalidParameterValue" and "dead-letter" in msg
    missing = plain_arn + "-missing"
    assert error_of(sqs.start_message_move_task, SourceArn=missing)[0] == "ResourceNotFoundException"
    assert error_of(sqs.list_message_move_tasks, SourceArn=missing)[0] == "ResourceNotFoundException"
    assert error_of(sqs.start_message_move_task, SourceArn="not-an-arn")[0] == "InvalidParameterValue"
    assert error_of(sqs.start_message_move_task, SourceArn=plain_arn.replace(":dev:", ":other:"))[:2] == \
        ("AccessDenied", 403)
    _, dlq = dlq_pair(sqs, 0)
    assert error_of(sqs.start_message_move_task, SourceArn=arn_of(sqs, dlq),
                    MaxNumberOfMessagesPerSecond=501)[0] == "InvalidParameterValue"
    assert error_of(sqs.start_message_move_task, SourceArn=arn_of(sqs, dlq), DestinationArn=missing)[0] == \
        "InvalidParameterValue"
    assert error_of(sqs.cancel_message_move_task, TaskHandle="dev:nope:00")[0] == "ResourceNotFoundException"
    assert sqs.list_message_move_tasks(SourceArn=plain_arn)["Results"] == []


def test_set_queue_attributes(sqs):
    _, dlq = new_queue(sqs, "sdlq")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    _, url = new_queue(sqs, "set")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "VisibilityTimeout": "1", "DelaySeconds": "0", "MessageRetentionPeriod": "600",
        "RedrivePolicy": '{"deadLetterTargetArn": "%s", "maxReceiveCount": 1}' % arn})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (a["VisibilityTimeout"], a["MessageRetentionPeriod"]) == ("1", "600")
    assert a["RedrivePolicy"] == '{"deadLetterTargetArn":"%s","maxReceiveCount":1}' % arn
    # The new policy governs the queue at once: a message received once and
    # not deleted goes to the DLQ.
    sqs.send_message(QueueUrl=url, MessageBody="once")
    assert receive_one(sqs, url)["Body"] == "once"  # the queue's new 1 s visibility timeout

    def moved():
        assert receive_one(sqs, url) is None, "delivered twice despite maxReceiveCount 1"
        return receive_one(sqs, dlq)

    assert await_until(moved, timeout=20, desc="the message in the DLQ")["Body"] == "once"
    # An empty RedrivePolicy removes it; bad values change nothing.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": ""})
    assert "RedrivePolicy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    for attrs, code in [({"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
                        ({"Nope": "1"}, "InvalidAttributeName"),
                        ({"VisibilityTimeout": "5", "RedrivePolicy": '{"deadLetterTargetArn": '
                          '"arn:aws:sqs:r:dev:missing-q", "maxReceiveCount": 2}'}, "InvalidAttributeValue")]:
        c, status, _ = error_of(sqs.set_queue_attributes, QueueUrl=url, Attributes=attrs)
        assert (c, status) == (code, 400), attrs
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"] == {
        "VisibilityTimeout": "1"}
    c, _, _ = error_of(sqs.set_queue_attributes, QueueUrl=url.rsplit("/", 1)[0] + "/" + unique_name("gone"),
                       Attributes={"VisibilityTimeout": "5"})
    assert c == "AWS.SimpleQueueService.NonExistentQueue"


# --- Batches ----------------------------------------------------------------


def test_batches_with_per_entry_failures(sqs):
    _, url = new_queue(sqs, "batch")
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one", "MessageAttributes": {"x": {"DataType": "String", "StringValue": "1"}}},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 901},
        {"Id": "c", "MessageBody": "bad \x02"},
        {"Id": "d", "MessageBody": "four"}])
    ok = {e["Id"]: e for e in r["Successful"]}
    assert set(ok) == {"a", "d"}
    assert ok["a"]["MD5OfMessageBody"] == md5("one")
    assert ok["a"]["MD5OfMessageAttributes"] == md5_attrs({"x": {"DataType": "String", "StringValue": "1"}})
    failed = {e["Id"]: e for e in r["Failed"]}
    assert failed["b"]["Code"] == "InvalidParameterValue" and failed["b"]["SenderFault"] is True
    assert failed["c"]["Code"] == "InvalidMessageContents"
    msgs = []
    await_until(lambda: msgs.extend(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
                                    .get("Messages", [])) or len(msgs) >= 2, desc="both messages")
    assert sorted(m["Body"] for m in msgs) == ["four", "one"]
    assert sorted(m["MessageId"] for m in msgs) == sorted(e["MessageId"] for e in ok.values())
    r = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "m0", "ReceiptHandle": msgs[0]["ReceiptHandle"], "VisibilityTimeout": 100},
        {"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 100}])
    assert [e["Id"] for e in r["Successful"]] == ["m0"]
    assert [(e["Id"], e["Code"]) for e in r["Failed"]] == [("bad", "ReceiptHandleIsInvalid")]
    r = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "m0", "ReceiptHandle": msgs[0]["ReceiptHandle"]},
        {"Id": "m1", "ReceiptHandle": msgs[1]["ReceiptHandle"]},
        {"Id": "bad", "ReceiptHandle": "garbage"}])
    assert sorted(e["Id"] for e in r["Successful"]) == ["m0", "m1"]
    assert [(e["Id"], e["Code"]) for e in r["Failed"]] == [("bad", "ReceiptHandleIsInvalid")]
    assert counts(sqs, url) == (0, 0, 0)


def test_batch_request_errors(sqs):
    _, url = new_queue(sqs, "berr", MaximumMessageSize=1024)
    e = {"MessageBody": "x"}
    cases = [
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
        ([dict(e, Id=f"i{i}") for i in range(11)], "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([dict(e, Id="same"), dict(e, Id="same")], "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([dict(e, Id="no spaces")], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": "a", "MessageBody": "x" * 600}, {"Id": "b", "MessageBody": "y" * 600}],
         "AWS.SimpleQueueService.BatchRequestTooLong"),
    ]
    for entries, code in cases:
        c, status, _ = error_of(sqs.send_message_batch, QueueUrl=url, Entries=entries)
        assert (c, status) == (code, 400), entries
    assert counts(sqs, url) == (0, 0, 0)


# --- Purge, auth, actions ---------------------------------------------------


def test_purge(sqs):
    _, url = new_queue(sqs, "purge")
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)])
    sqs.purge_queue(QueueUrl=url)
    assert await_until(lambda: counts(sqs, url) == (0, 0, 0), desc="an empty queue after the purge")
    assert receive_one(sqs, url) is None


def test_auth_errors(server, sqs):
    _, url = new_queue(sqs, "auth")
    wrong = make_client(server, key="A" * 86)
    c, status, _ = error_of(wrong.list_queues)
    assert (c, status) == ("SignatureDoesNotMatch", 403)
    nobody = make_client(server, account="nosuchaccount", key="A" * 86)
    c, status, _ = error_of(nobody.list_queues)
    assert (c, status) == ("SignatureDoesNotMatch", 403)
    # Another account reaches only its own queues.
    admin = server.admin()
    try:
        other, key = admin.new_account("sqsother")
    finally:
        admin.close()
    theirs = make_client(server, account=other, key=key)
    c, status, _ = error_of(theirs.send_message, QueueUrl=url, MessageBody="x")
    assert (c, status) == ("AccessDenied", 403)
    assert "QueueUrls" not in theirs.list_queues()
    # A named key signs too ("account:keyName").
    keyed = make_client(server, account=f"{other}:primary", key=key)
    name, _ = new_queue(keyed, "mine")
    assert keyed.get_queue_url(QueueName=name)["QueueUrl"].endswith(f"/{other}/{name}")


def test_unsigned_and_unknown_actions(server):
    import requests
    r = requests.post(server.base_url + "/", data="{}", headers={
        "X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"})
    assert r.status_code == 403
    assert r.json()["__type"].endswith("#MissingAuthenticationToken")
    assert r.headers["x-amzn-query-error"] == "MissingAuthenticationToken;Sender"
    r = requests.post(server.base_url + "/", data="{}", headers={
        "X-Amz-Target": "AmazonSQS.NoSuchAction", "Content-Type": "application/x-amz-json-1.0"})
    assert r.status_code == 400 and r.headers["x-amzn-query-error"] == "InvalidAction;Sender"


# --- FIFO queues ---------------------------------------------------------------


def new_fifo(sqs, prefix="fifo", **attrs):
    name = unique_name(prefix) + ".fifo"
    a = {"FifoQueue": "true", **{k: str(v) for k, v in attrs.items()}}
    return name, sqs.create_queue(QueueName=name, Attributes=a)["QueueUrl"]


def receive_all(sqs, url, **kw):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], **kw).get(
        "Messages", [])


def test_fifo_order_and_a_group_blocked_while_in_flight(sqs):
    _, url = new_fifo(sqs)
    sent = {}
    for g, n in (("A", 5), ("B", 3)):
        for i in range(n):
            r = sqs.send_message(QueueUrl=url, MessageBody=f"{g}{i}", MessageGroupId=g,
                                 MessageDeduplicationId=f"{g}-{i}")
            sent[f"{g}{i}"] = (r["MessageId"], r["SequenceNumber"])
    # Sequence numbers increase within a group.
    for g, n in (("A", 5), ("B", 3)):
        seqs = [int(sent[f"{g}{i}"][1]) for i in range(n)]
        assert seqs == sorted(seqs) and len(set(seqs)) == n
    # One message of each group at a time: the oldest.
    got = receive_all(sqs, url, VisibilityTimeout=30)
    assert sorted(m["Body"] for m in got) == ["A0", "B0"]
    for m in got:
        a = m["Attributes"]
        assert a["MessageGroupId"] == m["Body"][0] and a["SequenceNumber"] == sent[m["Body"]][1]
        assert a["MessageDeduplicationId"] == f"{m['Body'][0]}-{m['Body'][1]}"
        assert m["MessageId"] == sent[m["Body"]][0]
    assert receive_all(sqs, url) == [], "a group delivered a second message while one was in flight"
    a0 = next(m for m in got if m["Body"] == "A0")
    b0 = next(m for m in got if m["Body"] == "B0")
    # Deleting A0 lets A1 out; B0 returned to the queue comes back before B1.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=a0["ReceiptHandle"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=b0["ReceiptHandle"], VisibilityTimeout=0)
    got = await_until(lambda: receive_all(sqs, url, VisibilityTimeout=30), desc="A1 and B0 again")
    if len(got) == 1:  # one may become visible a moment after the other
        got += await_until(lambda: receive_all(sqs, url, VisibilityTimeout=30), desc="the other one")
    assert sorted(m["Body"] for m in got) == ["A1", "B0"]
    # Drain, deleting each: every message once, in order within its group.
    order = {"A": ["A0", "A1"], "B": ["B0"]}
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    deadline = time.monotonic() + 30
    while sum(len(v) for v in order.values()) < 8 and time.monotonic() < deadline:
        for m in receive_all(sqs, url, VisibilityTimeout=30, WaitTimeSeconds=1):
            order[m["Body"][0]].append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert order == {"A": [f"A{i}" for i in range(5)], "B": [f"B{i}" for i in range(3)]}
    assert counts(sqs, url) == (0, 0, 0)


def test_fifo_deduplication(sqs):
    _, url = new_fifo(sqs, "dedup")
    r1 = sqs.send_message(QueueUrl=url, MessageBody="once", MessageGroupId="g", MessageDeduplicationId="d1")
    r2 = sqs.send_message(QueueUrl=url, MessageBody="once again", MessageGroupId="g", MessageDeduplicationId="d1")
    assert r2["MessageId"] == r1["MessageId"] and r2["SequenceNumber"] == r1["SequenceNumber"]
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "dup", "MessageGroupId": "g", "MessageDeduplicationId": "d1"},
        {"Id": "b", "MessageBody": "new", "MessageGroupId": "g", "MessageDeduplicationId": "d2"}])
    ids = {e["Id"]: e["MessageId"] for e in r["Successful"]}
    assert ids["a"] == r1["MessageId"] and ids["b"] != r1["MessageId"]
    bodies = []
    for _ in range(2):
        (m,) = await_until(lambda: receive_all(sqs, url), desc="the next message")
        bodies.append(m["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert bodies == ["once", "new"]
    assert receive_all(sqs, url, WaitTimeSeconds=1) == []
    # By content: the body's SHA-256 is the deduplication id.
    _, url = new_fifo(sqs, "cbd", ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    c = sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g")
    assert a["MessageId"] == b["MessageId"] != c["MessageId"]
    (m,) = receive_all(sqs, url)
    assert m["Attributes"]["MessageDeduplicationId"] == hashlib.sha256(b"same").hexdigest()


def test_fifo_errors_and_attributes(sqs):
    name, url = new_fifo(sqs, "ferr", ContentBasedDeduplication="false")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert a["FifoQueue"] == "true" and a["ContentBasedDeduplication"] == "false"
    assert a["DeduplicationScope"] == "queue" and a["FifoThroughputLimit"] == "perQueue"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ContentBasedDeduplication": "true",
                                                         "DeduplicationScope": "messageGroup",
                                                         "FifoThroughputLimit": "perMessageGroupId"})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (a["ContentBasedDeduplication"], a["DeduplicationScope"], a["FifoThroughputLimit"]) == \
        ("true", "messageGroup", "perMessageGroupId")
    assert error_of(sqs.set_queue_attributes, QueueUrl=url, Attributes={"FifoQueue": "false"})[0] == \
        "InvalidAttributeName"
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="x")[:2] == ("MissingParameter", 400)
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g",
                    DelaySeconds=5)[0] == "InvalidParameterValue"
    assert error_of(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g" * 129)[0] == \
        "InvalidParameterValue"
    _, plain = new_fifo(sqs, "nodedup")
    assert error_of(sqs.send_message, QueueUrl=plain, MessageBody="x", MessageGroupId="g")[0] == \
        "InvalidParameterValue"
    # Names and kinds must agree.
    assert error_of(sqs.create_queue, QueueName=unique_name("x") + ".fifo")[0] == "InvalidParameterValue"
    assert error_of(sqs.create_queue, QueueName=unique_name("x"), Attributes={"FifoQueue": "true"})[0] == \
        "InvalidParameterValue"
    _, std = new_queue(sqs, "std")
    assert error_of(sqs.send_message, QueueUrl=std, MessageBody="x", MessageDeduplicationId="d")[0] == \
        "InvalidParameterValue"
    assert error_of(sqs.set_queue_attributes, QueueUrl=std,
                    Attributes={"ContentBasedDeduplication": "true"})[0] == "InvalidAttributeName"
    # A DLQ of the source's kind only.
    policy = '{"deadLetterTargetArn": "%s", "maxReceiveCount": "2"}' % arn_of(sqs, std)
    assert error_of(sqs.set_queue_attributes, QueueUrl=url, Attributes={"RedrivePolicy": policy})[0] == \
        "InvalidAttributeValue"


def test_fifo_dead_letter_lets_the_group_go_on(sqs):
    _, dlq = new_fifo(sqs, "fdlq")
    policy = '{"deadLetterTargetArn": "%s", "maxReceiveCount": "1"}' % arn_of(sqs, dlq)
    _, url = new_fifo(sqs, "fsrc", RedrivePolicy=policy)
    for i in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g", MessageDeduplicationId=str(i))
    (m,) = receive_all(sqs, url, VisibilityTimeout=1)
    assert m["Body"] == "m0"
    # m0 is not deleted: after its lease it goes to the DLQ, and m1 follows.
    m1 = await_until(lambda: receive_all(sqs, url, VisibilityTimeout=30), timeout=30, desc="m1 after m0 died")
    assert [x["Body"] for x in m1] == ["m1"]
    (d,) = await_until(lambda: receive_all(sqs, dlq), desc="m0 in the DLQ")
    assert d["Body"] == "m0" and d["Attributes"]["MessageGroupId"] == "g"


def test_fifo_many_groups_concurrently_in_order(sqs):
    _, url = new_fifo(sqs, "fconc")
    groups, per_group = 8, 25
    errors, seen, lock = [], {f"g{i}": [] for i in range(groups)}, threading.Lock()

    def producer(gs):
        try:
            for i in range(per_group):
                for g in gs:
                    sqs.send_message(QueueUrl=url, MessageBody=f"{g}:{i}", MessageGroupId=g,
                                     MessageDeduplicationId=f"{g}-{i}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    stop = threading.Event()

    def consumer():
        try:
            while not stop.is_set():
                for m in receive_all(sqs, url, VisibilityTimeout=60, WaitTimeSeconds=1):
                    g, i = m["Body"].split(":")
                    with lock:
                        seen[g].append(int(i))
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ps = [threading.Thread(target=producer, args=([f"g{k}", f"g{k + 4}"],)) for k in range(4)]
    cs = [threading.Thread(target=consumer) for _ in range(4)]
    for t in ps + cs:
        t.start()
    for t in ps:
        t.join()
    try:
        await_until(lambda: sum(len(v) for v in seen.values()) >= groups * per_group, timeout=120,
                    desc="every message")
    finally:
        stop.set()
        for t in cs:
            t.join()
    assert not errors, errors[:3]
    for g, got in seen.items():
        assert got == list(range(per_group)), (g, got)


def test_fifo_through_the_native_api(server, sqs):
    name, url = new_fifo(sqs, "fnative")
    c = server.client()
    r = c.put(name, "no group")
    assert r.status_code == 400, r.text
    sqs.send_message(QueueUrl=url, MessageBody="via sqs", MessageGroupId="g", MessageDeduplicationId="1")
    sqs.send_message(QueueUrl=url, MessageBody="second", MessageGroupId="g", MessageDeduplicationId="2")
    def next_native():
        r = c.get_next(name)
        return r.json() if r.status_code == 200 else None

    m = await_until(next_native, desc="the message through the native API")
    assert m["message"] == "via sqs"
    # A native ack lets the group go on too (at once, or by the sweeper).
    assert c.ack(name, m["popReceipt"]).status_code == 204
    (n,) = await_until(lambda: receive_all(sqs, url), timeout=20, desc="the second message")
    assert n["Body"] == "second"


# --- Tags and permissions -------------------------------------------------------


def test_tags(sqs):
    name = unique_name("tags")
    url = sqs.create_queue(QueueName=name, tags={"team": "billing", "env": "dev"})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "billing", "env": "dev"}
    # A new value replaces the old; untagging a key that is not there is fine.
    sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "cost-center": "4711", "note": ""})
    sqs.untag_queue(QueueUrl=url, TagKeys=["team", "absent"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "prod", "cost-center": "4711", "note": ""}
    # Tags do not disturb the queue's attributes, nor attributes the tags.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "7"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"]["env"] == "prod"
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
        "Attributes"]["VisibilityTimeout"] == "7"
    sqs.untag_queue(QueueUrl=url, TagKeys=["env", "cost-center", "note"])
    assert "Tags" not in sqs.list_queue_tags(QueueUrl=url)
    # A queue made again after a delete starts without tags.
    sqs.tag_queue(QueueUrl=url, Tags={"old": "1"})
    sqs.delete_queue(QueueUrl=url)
    assert error_of(sqs.list_queue_tags, QueueUrl=url)[0] == "AWS.SimpleQueueService.NonExistentQueue"
    assert error_of(sqs.tag_queue, QueueUrl=url, Tags={"a": "b"})[0] == \
        "AWS.SimpleQueueService.NonExistentQueue"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    assert "Tags" not in sqs.list_queue_tags(QueueUrl=url)


def test_tag_limits(sqs):
    _, url = new_queue(sqs, "taglim")
    sqs.tag_queue(QueueUrl=url, Tags={f"k{i}": "v" for i in range(50)})
    # A 51st tag is refused and changes nothing.
    c, status, msg = error_of(sqs.tag_queue, QueueUrl=url, Tags={"k50": "v", "k0": "changed"})
    assert (c, status) == ("InvalidParameterValue", 400) and "50" in msg
    tags = sqs.list_queue_tags(QueueUrl=url)["Tags"]
    assert len(tags) == 50 and tags["k0"] == "v"
    # Replacing values and removing keeps within the limit.
    sqs.tag_queue(QueueUrl=url, Tags={"k0": "w"})
    for bad in ({"": "v"}, {"k" * 129: "v"}, {"a": "v" * 257}, {"bad*key": "v"}, {"aws:x": "v"}):
        c, status, _ = error_of(sqs.tag_queue, QueueUrl=url, Tags=bad)
        assert (c, status) == ("InvalidParameterValue", 400), bad
    assert error_of(sqs.create_queue, QueueName=unique_name("t"),
                    tags={f"k{i}": "v" for i in range(51)})[0] == "InvalidParameterValue"
    # Keys and values of the largest size, in any language, are fine.
    sqs.untag_queue(QueueUrl=url, TagKeys=[f"k{i}" for i in range(50)])
    big = {"é" * 128: "ü" * 256, "a b:c/d=e+f-g@h_i.j": ""}
    sqs.tag_queue(QueueUrl=url, Tags=big)
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == big


def test_concurrent_tag_and_attribute_changes_are_all_kept(sqs):
    _, url = new_queue(sqs, "tagrace")
    errors = []

    def tagger(i):
        try:
            sqs.tag_queue(QueueUrl=url, Tags={f"t{i}": str(i)})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def setter(v):
        try:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": str(v)})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=tagger, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=setter, args=(5,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {f"t{i}": str(i) for i in range(8)}
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])[
        "Attributes"]["DelaySeconds"] == "5"


def test_permissions_are_denied_as_without_iam_policies(sqs):
    _, url = new_queue(sqs, "perm")
    c, status, msg = error_of(sqs.add_permission, QueueUrl=url, Label="l", AWSAccountIds=["123456789012"],
                              Actions=["SendMessage"])
    assert (c, status) == ("AccessDenied", 403) and "key" in msg
    c, status, _ = error_of(sqs.remove_permission, QueueUrl=url, Label="l")
    assert (c, status) == ("AccessDenied", 403)


# --- One queue, two APIs ------------------------------------------------------


def test_native_and_sqs_are_one_queue(server, sqs):
    name, url = new_queue(sqs, "both")
    c = server.client()
    try:
        r = c.put_batch(name, [{"message": "from native", "attributes": {"lang": "c"}}])
        assert r.status_code == 201, r.text
        m = receive_one(sqs, url, MessageAttributeNames=["All"])
        assert m["Body"] == "from native"
        assert m["MessageAttributes"] == {"lang": {"DataType": "String", "StringValue": "c"}}
        assert m["MD5OfMessageAttributes"] == md5_attrs(m["MessageAttributes"])
        # The SQS handle acks through the native API too.
        assert c.ack(name, m["ReceiptHandle"]).status_code == 204
        sqs.send_message(QueueUrl=url, MessageBody="from sqs",
                         MessageAttributes={"lang": {"DataType": "String", "StringValue": "python"},
                                            "n": {"DataType": "Number", "StringValue": "3"}})
        r = c.receive(name, wait=5)
        assert r.status_code == 200, r.text
        (msg,) = r.json()["messages"]
        assert msg["message"] == "from sqs"
        assert msg["attributes"]["lang"] == "python"
        assert msg["attributes"]["n"] == {"DataType": "Number", "StringValue": "3"}
        assert c.ack(name, msg["popReceipt"]).status_code == 204
    finally:
        c.close()
    assert counts(sqs, url) == (0, 0, 0)


def test_binary_attribute_round_trip_bytes(sqs):
    _, url = new_queue(sqs, "bin")
    raw = bytes(range(256))
    sqs.send_message(QueueUrl=url, MessageBody="b",
                     MessageAttributes={"raw": {"DataType": "Binary.gz", "BinaryValue": raw}})
    m = receive_one(sqs, url, MessageAttributeNames=["raw"])
    assert m["MessageAttributes"]["raw"] == {"DataType": "Binary.gz", "BinaryValue": raw}
    assert m["MD5OfMessageAttributes"] == md5_attrs(m["MessageAttributes"])


def test_queue_attributes_govern_native_calls(server, sqs):
    """VisibilityTimeout, DelaySeconds and MaximumMessageSize are the
    queue's options, so a native call that leaves them out gets them too."""
    name, url = new_queue(sqs, "gov", VisibilityTimeout=1, MaximumMessageSize=1024)
    c = server.client()
    try:
        d = c.get_queue(name).json()
        assert (d["visibilityTimeoutSeconds"], d["maximumMessageBytes"], d["delaySeconds"]) == (1, 1024, 0)
        assert c.put(name, "x" * 1025).status_code == 413
        assert c.put(name, "x" * 1024).status_code == 201
        first = c.receive(name).json()["messages"]
        assert len(first) == 1
        again = await_until(lambda: c.receive(name, invisibility=60).json()["messages"],
                            desc="the native lease of the queue's 1 s visibility timeout to run out")
        assert again[0]["messageId"] == first[0]["messageId"]
        assert again[0]["deliveryCount"] == 2
    finally:
        c.close()


# --- The AWS CLI ------------------------------------------------------------


def test_aws_cli(server, tmp_path):
    """`aws sqs ... --endpoint-url` as a user types it."""
    import json
    import os
    import subprocess

    env = dict(os.environ, AWS_ACCESS_KEY_ID="dev", AWS_SECRET_ACCESS_KEY=server.key, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def aws(*args, ok=True):
        p = subprocess.run(["aws", "sqs", *args, "--endpoint-url", server.base_url, "--output", "json"],
                           env=env, capture_output=True, text=True, timeout=60)
        if ok:
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout) if p.stdout.strip() else {}
        return p

    name = unique_name("cli")
    url = aws("create-queue", "--queue-name", name, "--attributes", "VisibilityTimeout=40")["QueueUrl"]
    assert url.endswith(f"/dev/{name}")
    assert aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "VisibilityTimeout") == {
        "Attributes": {"VisibilityTimeout": "40"}}
    sent = aws("send-message", "--queue-url", url, "--message-body", "from the cli",
               "--message-attributes", '{"k": {"DataType": "String", "StringValue": "v"}}')
    assert sent["MD5OfMessageBody"] == md5("from the cli")
    got = aws("receive-message", "--queue-url", url, "--message-attribute-names", "All", "--wait-time-seconds", "5")
    (m,) = got["Messages"]
    assert (m["Body"], m["MessageAttributes"]["k"]["StringValue"]) == ("from the cli", "v")
    aws("delete-message", "--queue-url", url, "--receipt-handle", m["ReceiptHandle"])
    assert aws("receive-message", "--queue-url", url) == {}
    p = aws("get-queue-url", "--queue-name", unique_name("none"), ok=False)
    assert p.returncode != 0 and "NonExistentQueue" in p.stderr, p.stderr
    aws("delete-queue", "--queue-url", url)


def test_server_exits_cleanly_after_the_above(server):
    """Last in this module: SIGTERM ends the server that served every test
    above with status 0; built with ASan (scripts/test.sh runs this module
    so), a leak or a memory error makes it nonzero."""
    assert server.stop() == 0, server.log_tail(40)
