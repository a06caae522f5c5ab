"""SQS's query protocol (form requests, XML answers) with a real client:
Debian's python3-boto3, whose botocore (1.29) predates the JSON protocol,
run under Debian's /usr/bin/python3 (tests/api/py/sqs_query_client.py),
on both backends; and a GET to a queue URL, signed with SigV4, as
hand-written clients send it."""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
import requests

from sluice_client import unique_name

HERE = os.path.dirname(os.path.abspath(__file__))
DEBIAN_PYTHON = "/usr/bin/python3"
NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


def test_debian_boto3_over_the_query_protocol(server):
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import boto3, botocore; print(botocore.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"Debian's python3-boto3 is not installed: run scripts/deps.sh --test ({probe.stderr[-300:]})")
    p = subprocess.run([DEBIAN_PYTHON, os.path.join(HERE, "py", "sqs_query_client.py"), server.base_url,
                        server.key, unique_name("qp")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    major, minor = map(int, r["botocore"].split(".")[:2])
    assert (major, minor) < (1, 31), f"botocore {r['botocore']} speaks the JSON protocol, not the query one"
    assert r["content_type"] == "text/xml", r
    assert r["listed"] and r["visibility"] == {"VisibilityTimeout": "40"}, r
    for k in ("md5_body_ok", "md5_attrs_ok", "body_ok", "attrs_ok", "receive_md5_ok"):
        assert r[k] is True, (k, r)
    assert r["receive_count"] == "1"
    assert r["batch_ok"] == ["a", "c"] and r["batch_failed"] == [["b", "InvalidParameterValue", True]], r
    assert r["batch_bodies"] == ["one", "three"], r
    assert r["deleted"] == ["m0", "m1"] and r["delete_failed"] == [["bad", "ReceiptHandleIsInvalid"]], r
    assert r["left"] == 0, r
    assert r["errors"] == {"missing_queue": ["AWS.SimpleQueueService.NonExistentQueue", 400],
                           "bad_attribute": ["InvalidAttributeValue", 400],
                           "bad_handle": ["ReceiptHandleIsInvalid", 404],
                           "empty_batch": ["AWS.SimpleQueueService.EmptyBatchRequest", 400]}, r
    assert r["after_delete"] == ["AWS.SimpleQueueService.NonExistentQueue", 400], r
    assert r["tags"] == {"team": "a+b=c/d@e f"} and r["created_tags"] == {"k": "v"}, r
    assert r["presigned_has_signature"] and r["presigned_status"] == 200, r
    assert r["presigned_body"] == ["presigned & sent"], r
    assert r["tampered_status"] == 403, r
    assert r["fifo_seq_increasing"] and r["fifo_first"] == [["f0", "g", True]], r
    assert r["fifo_second"] == ["f1"], r


def signed(server, method, url, data=None, headers=None):
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=data, headers=headers or {})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials("dev", server.key), "sqs", "us-east-1").add_auth(req)
    p = req.prepare()
    return requests.request(method, p.url, data=p.body, headers=dict(p.headers), timeout=30)


def test_get_to_a_queue_url_and_xml_errors(server):
    name = unique_name("qget")
    r = signed(server, "GET", f"{server.base_url}/?Action=CreateQueue&QueueName={name}&Version=2012-11-05")
    assert r.status_code == 200, r.text
    url = ET.fromstring(r.text).find(f"{NS}CreateQueueResult/{NS}QueueUrl").text
    assert url == f"{server.base_url}/dev/{name}"
    # To the queue URL, which names the queue: no QueueUrl parameter.
    r = signed(server, "GET", f"{url}?Action=GetQueueAttributes&AttributeName.1=VisibilityTimeout")
    assert r.status_code == 200, r.text
    attrs = {a.find(f"{NS}Name").text: a.find(f"{NS}Value").text
             for a in ET.fromstring(r.text).iter(f"{NS}Attribute")}
    assert attrs == {"VisibilityTimeout": "30"}
    r = signed(server, "POST", url, data="Action=SendMessage&MessageBody=hi+there%0D%0A",
               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert re.search(r"<MD5OfMessageBody>[0-9a-f]{32}</MD5OfMessageBody>", r.text)
    # Errors are XML ErrorResponses with AWS's codes; bad form input is 400.
    for target, code in [(f"{url}?Action=NoSuchAction", "InvalidAction"),
                         (f"{url}?Action=ReceiveMessage&MaxNumberOfMessages=11", "InvalidParameterValue"),
                         (f"{url}?Action=ReceiveMessage&AttributeName.2=All", "InvalidParameterValue"),
                         (f"{server.base_url}/dev/{name}-missing?Action=GetQueueAttributes",
                          "AWS.SimpleQueueService.NonExistentQueue")]:
        r = signed(server, "GET", target)
        assert r.status_code in (400, 404), r.text
        e = ET.fromstring(r.text).find(f"{NS}Error")
        assert e.find(f"{NS}Code").text == code, r.text
        assert e.find(f"{NS}Type").text == "Sender"
    r = requests.get(f"{url}?Action=GetQueueAttributes", timeout=30)
    assert r.status_code == 403 and "MissingAuthenticationToken" in r.text


def test_presigned_url_on_the_native_api(server):
    """SigV4's presigned form works on the native API too (API.md Auth 3)."""
    name = unique_name("pre")
    c = server.client()
    c.create_queue(name)
    c.put_ok(name, "for a presigned reader")
    url = f"{server.base_url}/api/v1/accounts/dev/queues/{name}/messages/next?invisibilityTimeSeconds=30"
    req = botocore.awsrequest.AWSRequest(method="GET", url=url)
    botocore.auth.SigV4QueryAuth(botocore.credentials.Credentials("dev", server.key), "sqs", "us-east-1",
                                 expires=120).add_auth(req)
    p = req.prepare()
    assert "X-Amz-Signature=" in p.url
    r = requests.get(p.url, timeout=30)
    assert r.status_code == 200 and r.json()["message"] == "for a presigned reader", r.text
    r = requests.get(p.url.replace("invisibilityTimeSeconds=30", "invisibilityTimeSeconds=31"), timeout=30)
    assert r.status_code == 401, r.text
    # A presigned URL of another account's key does not open this one.
    req = botocore.awsrequest.AWSRequest(method="GET", url=url)
    botocore.auth.SigV4QueryAuth(botocore.credentials.Credentials("dev", "A" * 86), "sqs", "us-east-1",
                                 expires=120).add_auth(req)
    assert requests.get(req.prepare().url, timeout=30).status_code == 401
