"""AWS's SQS digests as AWS documents them, written from the documentation,
not from the server's code, for the tests to check the server's against
(test_sqs.py, and py/sqs_query_client.py under Debian's python)."""
import hashlib
import struct


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def md5_attrs(attrs):
    """MD5OfMessageAttributes: each attribute in name order, its name, type
    and value length-prefixed, a transport byte (1 string, 2 binary) before
    the value."""
    b = b""
    for name in sorted(attrs):
        a = attrs[name]
        t = a["DataType"]
        b += struct.pack(">I", len(name.encode())) + name.encode() + struct.pack(">I", len(t)) + t.encode()
        if t.startswith("Binary"):
            v = a["BinaryValue"]
            b += b"\x02" + struct.pack(">I", len(v)) + v
        else:
            v = a["StringValue"].encode()
            b += b"\x01" + struct.pack(">I", len(v)) + v
    return hashlib.md5(b).hexdigest()
