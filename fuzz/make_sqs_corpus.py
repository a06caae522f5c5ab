#!/usr/bin/env python3
"""Seeds for fuzz_sqs: message attribute maps as the JSON protocol carries
them (good ones of each type, and each rule broken once), bodies, base64,
queue URLs, and JSON-protocol request bodies (for the fast JSON reader)."""
import hashlib
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "sqs")


def attr(t, v, key="StringValue"):
    return {"DataType": t, key: v}


MAPS = [
    {"color": attr("String", "blue"), "n": attr("Number", "-1.5e3"), "b": attr("Binary", "AAE=", "BinaryValue")},
    {"k.custom": attr("String.custom", "x"), "f": attr("Number.float", "0.25")},
    {"AWSTraceHeader": attr("String", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")},
    {"AWS.x": attr("String", "v")},
    {"a..b": attr("String", "v")},
    {"n": attr("Number", "1e")},
    {"b": attr("Binary", "AAE", "BinaryValue")},
    {f"k{i}": attr("String", "v") for i in range(11)},
    {"e": attr("String", "")},
]
RAW = [
    "héllo \U0001F600 <xml/> & tab\t".encode(),
    b"bad \x01 char",
    b"\xed\xa0\x80",
    b"aGVsbG8h",
    b"AA==",
    b"http://127.0.0.1:8080/dev/orders",
    b"https://sqs.eu-west-3.amazonaws.com/acct-1/q.x",
    b"/dev/..",
    b"jobs.fifo",
    # Query-protocol form bodies.
    b"Action=SendMessage&QueueUrl=%2Fdev%2Fq&MessageBody=hi+there%0D%0A&MessageAttribute.1.Name=n"
    b"&MessageAttribute.1.Value.DataType=Number&MessageAttribute.1.Value.StringValue=1",
    b"Action=SendMessageBatch&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=%3C%26%3E"
    b"&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=x",
    b"Action=CreateQueue&QueueName=q&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=40&Tag.1.Key=k&Tag.1.Value=v",
    b"Action=ReceiveMessage&AttributeName.1=All&MessageAttributeName.1=All&Entries=",
    b"Action=X&AttributeName.2=a&Foo.1.Bar=b&%zz=1",
]

BODIES = [
    {"QueueUrl": "http://127.0.0.1:8080/dev/q",
     "Entries": [{"Id": str(i), "MessageBody": "b\u00e9\n\"\U0001F600" * i} for i in range(3)]},
    {"QueueUrl": "/dev/q", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0, "AttributeNames": ["All"],
     "x": [True, False, None, 0, 9223372036854775807, 1.5, {"": []}]},
]
RAW += [json.dumps(b).encode() for b in BODIES] + [json.dumps(b, ensure_ascii=False, indent=1).encode() for b in BODIES]
RAW += [b'{"a":1,"a":2}', b'["\\u0000", "\\ud800"]', b'[01, 1e5, -]', b'{"k":"v"} trailing']

os.makedirs(OUT, exist_ok=True)
for seed in [json.dumps(m).encode() for m in MAPS] + RAW:
    with open(os.path.join(OUT, hashlib.sha1(seed).hexdigest()), "wb") as f:
        f.write(seed)
