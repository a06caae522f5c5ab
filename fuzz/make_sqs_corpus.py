#!/usr/bin/env python3
"""Seeds for fuzz_sqs: message attribute maps as the JSON protocol carries
them (good ones of each type, and each rule broken once), bodies, base64
and queue URLs."""
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
]

os.makedirs(OUT, exist_ok=True)
for seed in [json.dumps(m).encode() for m in MAPS] + RAW:
    with open(os.path.join(OUT, hashlib.sha1(seed).hexdigest()), "wb") as f:
        f.write(seed)
