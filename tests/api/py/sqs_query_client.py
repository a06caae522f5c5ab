"""Run by tests/api/test_sqs_query.py under Debian's /usr/bin/python3 with
Debian's python3-boto3, whose botocore (1.29) speaks SQS's query protocol:
form requests, XML answers. Prints one JSON report of what it saw.

    /usr/bin/python3 sqs_query_client.py <endpoint> <key> <queue name>
"""
import json
import os
import sys
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.exceptions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sqs_md5 import md5, md5_attrs  # noqa: E402


def code_of(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None


endpoint, key, name = sys.argv[1:4]
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="dev",
                   aws_secret_access_key=key)
out = {"botocore": botocore.__version__}
created = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40", "DelaySeconds": "0"})
url = created["QueueUrl"]
out["content_type"] = created["ResponseMetadata"]["HTTPHeaders"].get("content-type")
out["url"] = url
out["listed"] = url in sqs.list_queues(QueueNamePrefix=name).get("QueueUrls", [])
out["visibility"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
attrs = {"s": {"DataType": "String", "StringValue": "x & <y>"},
         "n": {"DataType": "Number", "StringValue": "12.5"},
         "b": {"DataType": "Binary", "BinaryValue": bytes([0, 1, 2, 13, 10, 255])}}
body = "line one\r\nline two <&> \"'\t\u2602"
sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
out["md5_body_ok"] = sent["MD5OfMessageBody"] == md5(body)
out["md5_attrs_ok"] = sent["MD5OfMessageAttributes"] == md5_attrs(attrs)
got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"], WaitTimeSeconds=5)
(m,) = got["Messages"]
out["body_ok"] = m["Body"] == body
out["attrs_ok"] = m["MessageAttributes"] == attrs
out["receive_md5_ok"] = m["MD5OfBody"] == md5(body) and \
    m["MD5OfMessageAttributes"] == md5_attrs(attrs)
out["receive_count"] = m["Attributes"]["ApproximateReceiveCount"]
sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=100)
sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
batch = sqs.send_message_batch(QueueUrl=url, Entries=[
    {"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two", "DelaySeconds": 901},
    {"Id": "c", "MessageBody": "three", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}])
out["batch_ok"] = sorted(e["Id"] for e in batch["Successful"])
out["batch_failed"] = [(e["Id"], e["Code"], e["SenderFault"]) for e in batch.get("Failed", [])]
msgs = []
for _ in range(10):
    msgs += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if len(msgs) >= 2:
        break
out["batch_bodies"] = sorted(x["Body"] for x in msgs)
deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": f"m{i}", "ReceiptHandle": x["ReceiptHandle"]}
                                                         for i, x in enumerate(msgs)] +
                                   [{"Id": "bad", "ReceiptHandle": "garbage"}])
out["deleted"] = sorted(e["Id"] for e in deleted["Successful"])
out["delete_failed"] = [(e["Id"], e["Code"]) for e in deleted.get("Failed", [])]
a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
out["left"] = int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
out["errors"] = {
    "missing_queue": code_of(sqs.get_queue_url, QueueName=name + "-missing"),
    "bad_attribute": code_of(sqs.set_queue_attributes, QueueUrl=url, Attributes={"VisibilityTimeout": "99999"}),
    "bad_handle": code_of(sqs.delete_message, QueueUrl=url, ReceiptHandle="garbage"),
    "empty_batch": code_of(sqs.send_message_batch, QueueUrl=url, Entries=[]),
}
# Tags: Tag.N.Key/Value and TagKey.N in the query, Tag elements in the XML.
sqs.tag_queue(QueueUrl=url, Tags={"team": "a+b=c/d@e f", "env": "dev"})
sqs.untag_queue(QueueUrl=url, TagKeys=["env"])
out["tags"] = sqs.list_queue_tags(QueueUrl=url).get("Tags")
tagged = sqs.create_queue(QueueName=name + "-tagged", tags={"k": "v"})["QueueUrl"]
out["created_tags"] = sqs.list_queue_tags(QueueUrl=tagged).get("Tags")
sqs.delete_queue(QueueUrl=tagged)
# A presigned URL (GET, the parameters and the signature in the query),
# fetched by a plain HTTP client with no credentials.
purl = sqs.generate_presigned_url("send_message", Params={"QueueUrl": url, "MessageBody": "presigned & sent"},
                                  ExpiresIn=60, HttpMethod="GET")
out["presigned_has_signature"] = "X-Amz-Signature=" in purl and "Authorization" not in purl
with urllib.request.urlopen(purl, timeout=30) as resp:
    out["presigned_status"] = resp.status
got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages", [])
out["presigned_body"] = [x["Body"] for x in got]
try:
    urllib.request.urlopen(purl.replace("presigned", "tampered", 1), timeout=30)
    out["tampered_status"] = 200
except urllib.error.HTTPError as e:
    out["tampered_status"] = e.code
# A FIFO queue: one message of a group at a time, in order, with its number.
furl = sqs.create_queue(QueueName=name + ".fifo", Attributes={"FifoQueue": "true",
                                                             "ContentBasedDeduplication": "true"})["QueueUrl"]
fsent = [sqs.send_message(QueueUrl=furl, MessageBody=f"f{i}", MessageGroupId="g") for i in range(2)]
out["fifo_seq_increasing"] = int(fsent[0]["SequenceNumber"]) < int(fsent[1]["SequenceNumber"])
fgot = sqs.receive_message(QueueUrl=furl, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
out["fifo_first"] = [(x["Body"], x["Attributes"]["MessageGroupId"], x["Attributes"]["SequenceNumber"] ==
                      fsent[0]["SequenceNumber"]) for x in fgot]
sqs.delete_message(QueueUrl=furl, ReceiptHandle=fgot[0]["ReceiptHandle"])
out["fifo_second"] = [x["Body"] for x in sqs.receive_message(QueueUrl=furl, WaitTimeSeconds=5)["Messages"]]
sqs.delete_queue(QueueUrl=furl)
sqs.delete_queue(QueueUrl=url)
out["after_delete"] = code_of(sqs.get_queue_url, QueueName=name)
print(json.dumps(out))
